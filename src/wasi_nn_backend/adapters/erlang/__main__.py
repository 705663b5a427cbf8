"""``python -m wasi_nn_backend.adapters.erlang``: the Erlang port program."""
import sys

from ...config import LoggingConfig
from ...logs import log_to_stderr
from .port import run

log_to_stderr(None, LoggingConfig())  # the backends' lines, at their logging.level, on stderr
sys.exit(run())
