"""{packet,4} framing on raw file descriptors: a 4-byte big-endian length, then the bytes.

Reads come from one thread (the port's reader); writes from any thread, one whole frame at a
time under a lock, so frames from concurrent requests never interleave.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable

log = logging.getLogger("wasi_nn_backend.erlang")

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 << 20   # far beyond any prompt a context holds; guards memory
_CHUNK = 1 << 20


class FrameTooLarge(Exception):
    """A frame longer than the limit was read past (discarded); the stream is still in step."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the frame is {size} bytes; at most {limit} are allowed")


class FrameReader:
    def __init__(self, fd: int, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes

    def read(self) -> bytes | None:
        """The next frame's bytes; None at EOF (a frame cut short by EOF counts as EOF).
        FrameTooLarge after skipping an over-long frame, so the next read starts in step."""
        header = self._read_exactly(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > self.max_bytes:
            if not self._skip(size):
                return None
            raise FrameTooLarge(size, self.max_bytes)
        return self._read_exactly(size)

    def _read_exactly(self, size: int) -> bytes | None:
        parts, left = [], size
        while left:
            chunk = os.read(self.fd, min(left, _CHUNK))
            if not chunk:
                if parts or left != size:
                    log.warning("EOF inside a frame (%d of %d bytes read)", size - left, size)
                return None
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def _skip(self, size: int) -> bool:
        while size:
            chunk = os.read(self.fd, min(size, _CHUNK))
            if not chunk:
                return False
            size -= len(chunk)
        return True


class FrameWriter:
    """Writes frames to ``fd``; the first failed write (the VM is gone) calls ``on_broken``
    once, and every later send returns False without writing."""

    def __init__(self, fd: int, on_broken: Callable[[], None]) -> None:
        self.fd = fd
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._broken = False

    def send(self, payload: bytes) -> bool:
        frame = memoryview(HEADER.pack(len(payload)) + payload)
        with self._lock:
            if self._broken:
                return False
            try:
                while frame:
                    frame = frame[os.write(self.fd, frame):]
                return True
            except OSError as error:
                self._broken = True   # first: a log handler sending frames finds it broken
                broken = error
        log.info("the VM side of fd %d is gone (%s)", self.fd, broken)
        self._on_broken()
        return False
