"""Logging: apply a LoggingConfig to the package logger ``wasi_nn_backend``.

Everything the package logs goes through ``logging.getLogger("wasi_nn_backend")`` or a child of it;
llama.cpp's own lines arrive on the child ``wasi_nn_backend.llama`` (llm/lib.py forwards them).
As a library should, the package logger has only a NullHandler of its own: records propagate to
the application's logging setup and nothing is printed twice. ``configure_logging`` attaches
handlers to the package logger only (never the root logger):

* a FileHandler when ``file`` is set (append mode, UTF-8; it flushes after every record, so the
  file really holds the lines while the backend runs; never colours), and
* a stream handler on stderr (ANSI level colours when ``colors``) only when the program asks
  (``stderr=True``): the command line and the Erlang port program do (``log_to_stderr``).

``level`` is debug / info / warn / error / fatal / none; ``enable_debug`` forces debug; ``none``
attaches nothing and emits nothing. In a library the default (info, no ``file``) sets no
level: the application's logging setup decides what it hears; a program that prints the lines
itself (``log_to_stderr``) gets what its backends ask for. Several backends may be configured at once: each call gets
its own handlers, each handler filters at its own level, and the package logger's level is the
lowest level any open handle asks for (restored to what it was when the last handle closes).
``LogHandle.close()`` removes exactly its own handlers and is idempotent. Records still propagate
to the root logger as usual, so an application's own logging setup keeps seeing them.
"""
from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable

from .config import LoggingConfig

PACKAGE_LOGGER = "wasi_nn_backend"
LLAMA_LOGGER = "wasi_nn_backend.llama"

_SILENT = logging.CRITICAL + 10       # above every level: "none"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "fatal": logging.CRITICAL, "none": _SILENT}

_COLORS = {logging.DEBUG: "\x1b[36m", logging.INFO: "\x1b[32m", logging.WARNING: "\x1b[33m",
           logging.ERROR: "\x1b[31m", logging.CRITICAL: "\x1b[1;31m"}
_RESET = "\x1b[0m"

logging.getLogger(PACKAGE_LOGGER).addHandler(logging.NullHandler())

_lock = threading.Lock()
_open_levels: dict[int, int] = {}     # id(handle) -> level, for every open handle
_saved_level: int | None = None       # the package logger's level before the first handle


def python_level(cfg: LoggingConfig) -> int:
    """The ``logging`` level number ``cfg`` asks for (enable_debug forces DEBUG)."""
    return logging.DEBUG if cfg.enable_debug else LEVELS[cfg.level]


class _ColorFormatter(logging.Formatter):
    """Colours the whole line by level; the record is not changed (other handlers share it)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        color = next((_COLORS[lv] for lv in sorted(_COLORS, reverse=True)
                      if record.levelno >= lv), "")
        return f"{color}{line}{_RESET}" if color else line


def _formatter(cfg: LoggingConfig, colors: bool) -> logging.Formatter:
    if cfg.timestamps:
        fmt = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
        datefmt = "%Y-%m-%d %H:%M:%S"
    else:
        fmt, datefmt = "%(levelname)s %(name)s: %(message)s", None
    cls = _ColorFormatter if colors else logging.Formatter
    return cls(fmt, datefmt)


class LogHandle:
    """The handlers one configure_logging call attached; close() takes exactly those off."""

    def __init__(self, logger: logging.Logger, handlers: Iterable[logging.Handler], level: int,
                 warnings: list[str]):
        self.logger = logger
        self.handlers: tuple[logging.Handler, ...] = tuple(handlers)
        self.level = level
        self.warnings = warnings          # e.g. a log file that could not be opened
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Remove and close this handle's handlers; later calls do nothing."""
        with _lock:
            if self._closed:
                return
            self._closed = True
            for handler in self.handlers:
                self.logger.removeHandler(handler)
            _open_levels.pop(id(self), None)
            _apply_level_locked(self.logger)
        for handler in self.handlers:
            handler.close()

    def __enter__(self) -> LogHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _apply_level_locked(logger: logging.Logger) -> None:
    global _saved_level
    if _open_levels:
        if _saved_level is None:
            _saved_level = logger.level
        logger.setLevel(min(_open_levels.values()))
    elif _saved_level is not None:
        logger.setLevel(_saved_level)
        _saved_level = None


def _handlers(cfg: LoggingConfig, level: int, stderr: bool,
              warnings: list[str]) -> list[logging.Handler]:
    if level >= _SILENT:
        return []
    handlers: list[logging.Handler] = []
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setFormatter(_formatter(cfg, cfg.colors))
    if cfg.file:
        try:
            # StreamHandler.emit flushes after every record, so the file is always current.
            handlers.append(logging.FileHandler(cfg.file, mode="a", encoding="utf-8"))
            handlers[-1].setFormatter(_formatter(cfg, colors=False))
        except OSError as exc:
            # A log file that cannot be opened must not stop the backend: say so and go on.
            warnings.append(f"logging.file: cannot open {cfg.file!r} for appending: {exc}")
    for handler in handlers:
        handler.setLevel(level)
    return handlers


def configure_logging(cfg: LoggingConfig, *, stderr: bool = False) -> LogHandle:
    """Attach handlers for ``cfg`` to the package logger (its file; stderr only when
    ``stderr``) and set the level it emits at; close the handle to undo both."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    level = python_level(cfg)
    warnings: list[str] = []
    handlers = _handlers(cfg, level, stderr, warnings)
    handle = LogHandle(logger, handlers, level, warnings)
    with _lock:
        for handler in handlers:
            logger.addHandler(handler)
        if handlers or level != logging.INFO or any(
                getattr(h, "wasi_nn_program", False) for h in logger.handlers):
            # The default (info, no file) in a library leaves the level to the application's
            # logging setup: a root handler at WARNING must not start receiving our INFO. A
            # program (log_to_stderr: the CLI, the port) prints what its backends ask for.
            _open_levels[id(handle)] = level
            _apply_level_locked(logger)
    for text in warnings:
        logger.warning("%s", text)
    _announce(handle, cfg)
    return handle


def _announce(handle: LogHandle, cfg: LoggingConfig) -> None:
    """One INFO line to this handle's own handlers only (a new log file shows it is live)."""
    record = logging.LogRecord(PACKAGE_LOGGER, logging.INFO, __file__, 0,
                               "logging configured: level=%s enable_debug=%s file=%s",
                               (cfg.level, cfg.enable_debug, cfg.file or "-"), None)
    for handler in handle.handlers:
        if record.levelno >= handler.level:
            handler.handle(record)


def log_to_stderr(level: str | None, cfg: LoggingConfig | None = None) -> logging.Handler:
    """A program's own output of the package's lines on stderr (the CLI, the port program).
    ``level`` filters (debug ... none); None passes what the package emits, i.e. what the open
    backends' ``logging.level`` asks for (warnings and up while none is open). Lines look like
    ``wasi-nn-backend: warning: ...``, or as ``cfg``'s timestamps and colors say when given.
    Take it off with ``logging.getLogger(PACKAGE_LOGGER).removeHandler``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ProgramFormatter("%(message)s") if cfg is None
                         else _formatter(cfg, cfg.colors))
    handler.setLevel(LEVELS[level] if level is not None else logging.NOTSET)
    handler.wasi_nn_program = True     # type: ignore[attr-defined]  (configure_logging reads it)
    logging.getLogger(PACKAGE_LOGGER).addHandler(handler)
    return handler


class _ProgramFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"wasi-nn-backend: {record.levelname.lower()}: {super().format(record)}"
