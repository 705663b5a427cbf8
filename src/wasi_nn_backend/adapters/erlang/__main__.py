"""``python -m wasi_nn_backend.adapters.erlang``: the Erlang port program."""
import sys

from .port import run

sys.exit(run())
