"""``python -m wasi_nn_backend.adapters.erlang [--log-frames]``: the Erlang port program. With
--log-frames its log lines go to the VM as frames (log_frames.py), else to stderr."""
import sys

from ...config import LoggingConfig
from ...logs import log_to_stderr
from .port import run

frames = "--log-frames" in sys.argv[1:]
if not frames:
    log_to_stderr(None, LoggingConfig())  # the backends' lines, at their logging.level
sys.exit(run(log_frames=frames))
