"""The backend's model memory budget (``memory.max_model_memory_mb``): every loaded model holds
a reservation of its estimated footprint (weights + KV cache + compute buffers) from before its
load starts until it is freed, so concurrent loads and a hot swap (old and new model in memory
at once) are counted too. Over the limit, a load is refused with too_large before it begins.

Without a limit, one check still holds: what llama.cpp must allocate and write (KV caches and
compute buffers; weights are memory-mapped) may not exceed the machine's physical memory.
llama.cpp clears a new KV cache, touching every page, so an oversized one would get the process
killed by the kernel instead of failing the load."""
from __future__ import annotations

import os
import threading

from ..engine.footprint import Footprint, mb
from ..errors import TooLarge


def physical_memory_bytes() -> int:
    """The machine's RAM (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


class Reservation:
    def __init__(self, budget: MemoryBudget, n_bytes: int, allocated: int, what: str) -> None:
        self.budget, self.n_bytes, self.what = budget, n_bytes, what
        self.allocated = allocated  # KV cache + compute: written, not mapped
        self.released = False

    def release(self) -> None:
        """Give the bytes back (idempotent)."""
        self.budget.release(self)


class MemoryBudget:
    def __init__(self, limit_mb: int) -> None:
        self.limit_bytes = limit_mb * 1024 * 1024     # 0 = no limit
        self._lock = threading.Lock()
        self._held: list[Reservation] = []

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(r.n_bytes for r in self._held)

    def reserve(self, footprint: Footprint, what: str) -> Reservation:
        """Hold ``footprint`` for ``what`` (a model path), or raise TooLarge with the numbers."""
        needed = footprint.total_bytes
        with self._lock:
            used = sum(r.n_bytes for r in self._held)
            if self.limit_bytes and used + needed > self.limit_bytes:
                parts = footprint.as_mb()
                raise TooLarge(
                    f"loading {what} needs about {mb(needed)} MB (weights "
                    f"{parts['weights_mb']} MB, KV cache {parts['kv_cache_mb']} MB, compute "
                    f"{parts['compute_mb']} MB); {mb(used)} MB of the "
                    f"{mb(self.limit_bytes)} MB limit (memory.max_model_memory_mb) are held by "
                    f"{len(self._held)} loaded model(s), {mb(self.limit_bytes - used)} MB free",
                    needed=needed)
            allocated = footprint.kv_cache_bytes + footprint.compute_bytes
            held = sum(r.allocated for r in self._held)
            physical = physical_memory_bytes()
            if not self.limit_bytes and physical and held + allocated > physical:
                raise TooLarge(
                    f"loading {what} needs about {mb(allocated)} MB of KV cache and compute "
                    f"buffers (KV cache {footprint.as_mb()['kv_cache_mb']} MB); with the "
                    f"{mb(held)} MB loaded models hold that exceeds this machine's "
                    f"{mb(physical)} MB of physical memory: lower n_ctx or n_seq_max",
                    needed=allocated)
            reservation = Reservation(self, needed, allocated, what)
            self._held.append(reservation)
            return reservation

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (idempotent; Reservation.release calls it)."""
        with self._lock:
            if not reservation.released:
                reservation.released = True
                self._held.remove(reservation)
