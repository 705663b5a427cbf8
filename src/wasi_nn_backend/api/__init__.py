"""The Python API: Backend -> Graph -> Session, and the WASI-NN execution context on a session.

The Backend owns every handle and every lifetime; the edges (wasi_nn/, adapters/) call it and
import only from this package (and errors, config, logs): everything an edge names is here."""
from ..core.clock import Clock, MonotonicClock
from ..core.kv_policy import common_prefix
from ..core.request import Completion, FinishReason
from ..engine.clock import FakeClock
from ..engine.streams import EndOfStream, Piece, ReadySet, Stream, TokenProbs
from .backend import Backend, BackendStats, Graph
from .exec_context import ExecutionContext, embedding_json
from .session import Session

__all__ = ["Backend", "BackendStats", "Clock", "Completion", "EndOfStream", "ExecutionContext",
           "FakeClock", "FinishReason", "Graph", "MonotonicClock", "Piece", "ReadySet", "Session",
           "Stream", "TokenProbs", "common_prefix", "embedding_json"]
