"""HandleTable: small integer handles for objects, the one way every layer above the engine
names what it made. Handles count up from ``first`` and are never reused within a table, so a
stale handle is not_found, never somebody else's object. Thread-safe.

The Backend keeps one for its graphs and one for its sessions (execution contexts); the
process keeps one for the backends the function API and the Erlang port made (``BACKENDS``);
each WebAssembly guest keeps its own, counted from 0 as WasmEdge counts them."""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import NotFound

T = TypeVar("T")


class HandleTable(Generic[T]):
    def __init__(self, missing: Callable[[int], str], *, first: int = 1) -> None:
        """``missing(handle)``: the not_found message for a handle not in the table."""
        self._missing = missing
        self._ids = itertools.count(first)
        self._items: dict[int, T] = {}
        self._lock = threading.Lock()

    def reserve(self) -> int:
        """A new handle, not yet in the table (put() fills it)."""
        with self._lock:
            return next(self._ids)

    def add(self, item: T) -> int:
        with self._lock:
            handle = next(self._ids)
            self._items[handle] = item
            return handle

    def put(self, handle: int, item: T) -> None:
        """Fill (or move to the end) a handle from reserve()."""
        with self._lock:
            self._items.pop(handle, None)
            self._items[handle] = item

    def get(self, handle: int) -> T:
        """The object; NotFound (with the table's message) when there is none."""
        with self._lock:
            item = self._items.get(handle)
        if item is None:
            raise NotFound(self._missing(handle))
        return item

    def find(self, handle: int) -> T | None:
        with self._lock:
            return self._items.get(handle)

    def pop(self, handle: int) -> T:
        """Take it out; NotFound when it is not (or no longer) there."""
        with self._lock:
            item = self._items.pop(handle, None)
        if item is None:
            raise NotFound(self._missing(handle))
        return item

    def remove(self, handle: int, item: T) -> bool:
        """Take ``handle`` out if it still names ``item``; False if it does not."""
        with self._lock:
            if self._items.get(handle) is not item:
                return False
            del self._items[handle]
            return True

    def values(self) -> list[T]:
        """A snapshot, oldest (or least recently put) first."""
        with self._lock:
            return list(self._items.values())

    def clear(self) -> list[T]:
        with self._lock:
            items, self._items = list(self._items.values()), {}
            return items

    def __len__(self) -> int:
        return len(self._items)
