"""logs.py: a LoggingConfig really reaches the package logger's handlers, and only its own."""
from __future__ import annotations

import contextlib
import logging
import sys

import pytest

from wasi_nn_backend.config import LoggingConfig
from wasi_nn_backend.logs import LLAMA_LOGGER, PACKAGE_LOGGER, configure_logging

pkg = logging.getLogger(PACKAGE_LOGGER)
llama = logging.getLogger(LLAMA_LOGGER)


@pytest.fixture(autouse=True)
def _clean_package_logger():
    before = (list(pkg.handlers), pkg.level, list(logging.getLogger().handlers))
    yield
    assert (list(pkg.handlers), pkg.level, list(logging.getLogger().handlers)) == before


def lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_file_receives_the_lines_while_open(tmp_path):
    log_file = tmp_path / "backend.log"
    log_file.write_text("earlier line\n", encoding="utf-8")
    with configure_logging(LoggingConfig(level="info", file=str(log_file))):
        pkg.getChild("engine").info("engine ready")
        llama.warning("llama.cpp says hi")
        pkg.debug("not at info")
        written = lines(log_file)           # read while the handle is open: flushed per record
    assert written[0] == "earlier line"     # append mode
    assert any("INFO wasi_nn_backend.engine: engine ready" in line for line in written)
    assert any("WARNING wasi_nn_backend.llama: llama.cpp says hi" in line for line in written)
    assert any("logging configured" in line for line in written)
    assert not any("not at info" in line for line in written)


def test_enable_debug_forces_debug(tmp_path):
    log_file = tmp_path / "debug.log"
    with configure_logging(LoggingConfig(level="error", enable_debug=True, file=str(log_file))):
        llama.debug("token piece")
    assert any("DEBUG wasi_nn_backend.llama: token piece" in line for line in lines(log_file))


def test_level_none_emits_nothing(tmp_path, capsys):
    log_file = tmp_path / "none.log"
    with configure_logging(LoggingConfig(level="none", file=str(log_file))) as handle:
        assert handle.handlers == ()
        pkg.critical("fatal but silenced")
        llama.error("also silenced")
    assert lines(log_file) == []
    assert capsys.readouterr().err == ""


def test_levels_filter(tmp_path):
    log_file = tmp_path / "warn.log"
    with configure_logging(LoggingConfig(level="warn", file=str(log_file))):
        pkg.info("quiet")
        pkg.warning("loud")
    text = log_file.read_text(encoding="utf-8")
    assert "loud" in text and "quiet" not in text


def test_two_handles_do_not_interfere(tmp_path):
    file_a, file_b = tmp_path / "a.log", tmp_path / "b.log"
    handle_a = configure_logging(LoggingConfig(level="debug", file=str(file_a)))
    handle_b = configure_logging(LoggingConfig(level="error", file=str(file_b)))
    try:
        pkg.debug("detail")
        pkg.error("failure")
        assert any("detail" in line for line in lines(file_a))
        assert not any("detail" in line for line in lines(file_b))
        assert any("failure" in line for line in lines(file_b))
        handle_a.close()
        handle_a.close()                                  # idempotent
        assert handle_a.closed and not handle_b.closed
        assert not set(handle_a.handlers) & set(pkg.handlers)
        assert set(handle_b.handlers) <= set(pkg.handlers)
        pkg.error("after a closed")
        assert not any("after a closed" in line for line in lines(file_a))
        assert any("after a closed" in line for line in lines(file_b))
    finally:
        handle_a.close()
        handle_b.close()


def test_stream_goes_to_stderr_with_colors_and_the_file_never_has_them(tmp_path, capsys):
    log_file = tmp_path / "color.log"
    with configure_logging(LoggingConfig(level="info", colors=True, timestamps=False,
                                         file=str(log_file)), stderr=True):
        pkg.warning("coloured")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "\x1b[33mWARNING wasi_nn_backend: coloured\x1b[0m" in captured.err
    assert "WARNING wasi_nn_backend: coloured" in lines(log_file)       # no timestamp, no ANSI
    assert "\x1b[" not in log_file.read_text(encoding="utf-8")


def test_timestamps_on_by_default(capsys):
    with configure_logging(LoggingConfig(level="info"), stderr=True):
        pkg.info("stamped")
    line = next(x for x in capsys.readouterr().err.splitlines() if "stamped" in x)
    assert line[:4].isdigit() and line[4] == "-" and " INFO wasi_nn_backend: stamped" in line


def test_a_file_that_cannot_be_opened_is_a_warning_not_a_failure(tmp_path, capsys):
    """(on stderr when the program asked for stderr output, as the CLI does)"""
    bad = tmp_path / "missing-dir" / "x.log"
    with configure_logging(LoggingConfig(level="info", file=str(bad)), stderr=True) as handle:
        assert len(handle.handlers) == 1 and "cannot open" in handle.warnings[0]
    assert "cannot open" in capsys.readouterr().err


def test_the_library_writes_nothing_to_stderr_by_itself(capsys):
    """Library convention: a NullHandler, no stream handler, unless asked (the CLI asks)."""
    assert any(isinstance(h, logging.NullHandler) for h in pkg.handlers)
    with configure_logging(LoggingConfig(level="info")) as handle:
        assert handle.handlers == ()
        pkg.warning("only the application's handlers decide")
    assert capsys.readouterr().err == ""


@contextlib.contextmanager
def application_logging(level: int):
    """What logging.basicConfig(level=level) sets up, taken off afterwards."""
    root = logging.getLogger()
    app = logging.StreamHandler(sys.stderr)
    root.addHandler(app)
    saved = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(app)
        root.setLevel(saved)


def test_an_application_that_configures_logging_sees_each_line_once(capsys):
    from wasi_nn_backend import Backend
    with application_logging(logging.INFO), Backend({"logging": {"level": "info"}}):
        pass
    assert capsys.readouterr().err.count("backend ready") == 1


def test_an_application_at_warning_hears_no_info_lines_by_default(capsys):
    """The default logging config sets no level on the package logger: an application whose
    logging is at WARNING does not start receiving the package's INFO lines (a Backend used to
    set its logger to INFO, past the application's threshold)."""
    from wasi_nn_backend import Backend
    with application_logging(logging.WARNING), Backend():
        pkg.warning("a warning still comes through")
    err = capsys.readouterr().err
    assert "backend ready" not in err and "a warning still comes through" in err


def test_a_program_prints_the_package_lines_on_stderr(capsys):
    from wasi_nn_backend.logs import log_to_stderr
    handler = log_to_stderr("warn")
    try:
        pkg.info("not shown")
        pkg.getChild("config").warning("temprature: unknown key")
    finally:
        pkg.removeHandler(handler)
    assert capsys.readouterr().err == "wasi-nn-backend: warning: temprature: unknown key\n"
    handler = log_to_stderr(None, LoggingConfig(timestamps=False))   # the port program's
    try:
        with configure_logging(LoggingConfig(level="info")):   # a backend at info
            pkg.info("backend ready")
    finally:
        pkg.removeHandler(handler)
    assert capsys.readouterr().err == "INFO wasi_nn_backend: backend ready\n"
