"""The process's backends by handle: the edges that name a backend by an integer (the function
API's ``init_backend``, the Erlang port's ``init_backend``) share this one table, so a handle
means the same backend to each and is never reused."""
from __future__ import annotations

from ..config import Config
from ..core.clock import Clock
from .backend import Backend
from .handles import HandleTable

BACKENDS: HandleTable[Backend] = HandleTable(
    lambda handle: f"no backend with handle {handle} (never made, or deinitialized)")


def open_backend(config: Config | str | bytes | dict | None, *, clock: Clock | None = None
                 ) -> int:
    """A new Backend with ``config``; its handle."""
    return BACKENDS.add(Backend(config, clock=clock))


def backend(handle: int) -> Backend:
    """NotFound for a handle never made or deinitialized."""
    return BACKENDS.get(handle)


def close_backend(handle: int) -> None:
    """Close the backend and forget its handle; NotFound when it is gone already."""
    BACKENDS.pop(handle).close()
