"""The Erlang port program: ``{packet,4}`` External Term Format frames on fds 3 (in) and 4 (out)
(docs/erlang-protocol.md). Layout: ``etf`` (bounded ETF decoding), ``terms`` (the ETF mapping,
through erlang_py), ``frames`` (length-prefixed frames on raw fds), ``ops`` (the requests, on
the Python API: api.registry's backends and their graphs and sessions), ``relay`` (generations
as streams, one forwarder thread, per-session lanes), ``workers`` (bounded pool and byte
budget), ``port`` (reader thread, dispatch, the end on EOF).

    wasi-nn-backend erlang-port          or      python -m wasi_nn_backend.adapters.erlang
"""
from .port import Port, run

__all__ = ["Port", "run"]
