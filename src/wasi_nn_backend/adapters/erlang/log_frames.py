"""The port program's log lines as frames, for the VM's logger (``--log-frames``): each record
the package emits (at the level the open backends' ``logging.level`` sets) goes out as
``{log, Level, LoggerName, Message}``, with no request Id; the Erlang client hands it to
``logger``. Without the flag the lines go to stderr, as for any program.

A record logged while a frame is being sent (the writer noting that the VM is gone) is dropped
rather than sent from inside the send: one frame at a time per thread.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .terms import atom, binary

LOG = atom("log")
_LEVELS = ((logging.CRITICAL, "critical"), (logging.ERROR, "error"),
           (logging.WARNING, "warning"), (logging.INFO, "info"))


def level_name(levelno: int) -> str:
    """logger's level atom for a Python level (what is below info is debug)."""
    return next((name for floor, name in _LEVELS if levelno >= floor), "debug")


class FrameLogHandler(logging.Handler):
    def __init__(self, send: Callable[[Any], bool]) -> None:
        super().__init__()
        self._send = send
        self._sending = threading.local()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.wasi_nn_program = True   # the program's own output (logs.configure_logging)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._sending, "active", False):
            return
        self._sending.active = True
        try:
            self._send((LOG, atom(level_name(record.levelno)), binary(record.name),
                        binary(self.format(record))))
        except Exception:
            self.handleError(record)
        finally:
            self._sending.active = False
