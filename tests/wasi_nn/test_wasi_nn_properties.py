"""Property-based test (hypothesis) over every function of the function API: for arguments
drawn from good values (live handles, a real model, buffers) and hostile ones (wrong types,
lone surrogates, bad UTF-8, huge and negative numbers, closed handles), no exception escapes,
the result has the documented shape, ``unknown`` (an internal bug) never appears, and a good
call afterwards still works. Derandomized: CI runs the same examples every time."""
from __future__ import annotations

import json
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from wasi_nn_backend import wasi_nn as nn  # noqa: E402
from wasi_nn_backend.errors import ErrorCode as E  # noqa: E402

QUIET = json.dumps({"logging": {"level": "none"},
                    "model": {"n_ctx": 64, "n_seq_max": 2, "threads": 1},
                    "stopping": {"max_tokens": 2}})
GOOD_RUN = '{"temperature": 0, "max_tokens": 2}'
# Per function; HYPOTHESIS_EXAMPLES=500 HYPOTHESIS_RANDOM=1 for a longer, random local run.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "40"))


class Live:
    """A placeholder for a live handle, filled in at call time."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<live {self.name}>"


CTX, GRAPH, EXEC, MODEL = Live("ctx"), Live("graph"), Live("exec"), Live("model")

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40),
    st.sampled_from(["\udc80", "a\ud800b", "x" * 70_000, "{" * 5_000, "/etc/passwd",
                     b"\xff\xfe", b"\x00" * 300, '{"temperature": "hot"}',
                     '{"max_tokens": -1}', '{"model": {"n_batch": 1}}', "{}", "null"]),
    st.builds(bytearray, st.integers(0, 64)), st.builds(memoryview, st.binary(max_size=8)),
    st.lists(st.one_of(st.binary(max_size=8), st.integers(), st.text(max_size=4)),
             max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.builds(object),
    st.builds(nn.Tensor, st.one_of(st.none(), st.just(5), st.lists(
        st.one_of(st.integers(-3, 2**40), st.floats()), max_size=3)),
        st.one_of(st.integers(-1, 9), st.text(max_size=2)),
        st.one_of(st.none(), st.binary(max_size=8), st.text(max_size=8), st.integers())),
)


def arg(*good) -> st.SearchStrategy:
    """A good value (the call's hostile arguments are drawn from HOSTILE instead)."""
    return st.sampled_from(good)


HANDLE_CTX = arg(CTX)
HANDLE_EXEC = arg(EXEC)
PROMPT = arg(nn.Tensor([5], nn.TensorType.U8, b"Hello"), "Hi", b"Hi")
BUFFER = arg(bytearray(4096), bytearray(2))
CONFIG = arg(None, QUIET)
FUNCTIONS = {
    "init_backend": (nn.init_backend, []),
    "init_backend_with_config": (nn.init_backend_with_config, [CONFIG, arg(None)]),
    "deinit_backend": (nn.deinit_backend, [HANDLE_CTX]),
    "load": (nn.load, [HANDLE_CTX, arg([b"GGUF\x03\x00", b"{}"]), arg(5, 6), arg(0)]),
    "load_by_name": (nn.load_by_name, [HANDLE_CTX, arg(MODEL), arg(None)]),
    "load_by_name_with_config": (nn.load_by_name_with_config,
                                 [HANDLE_CTX, arg(MODEL), arg(None), CONFIG, arg(None)]),
    "unload": (nn.unload, [HANDLE_CTX, arg(GRAPH)]),
    "init_execution_context": (nn.init_execution_context, [HANDLE_CTX, arg(GRAPH)]),
    "init_execution_context_with_session_id": (nn.init_execution_context_with_session_id,
                                               [HANDLE_CTX, arg("alice"), arg(GRAPH, None)]),
    "close_execution_context": (nn.close_execution_context, [HANDLE_CTX, HANDLE_EXEC]),
    "set_input": (nn.set_input, [HANDLE_CTX, HANDLE_EXEC, arg(0, 1), PROMPT]),
    "compute": (nn.compute, [HANDLE_CTX, HANDLE_EXEC]),
    "get_output": (nn.get_output, [HANDLE_CTX, HANDLE_EXEC, arg(0, 1), BUFFER]),
    "compute_single": (nn.compute_single, [HANDLE_CTX, HANDLE_EXEC]),
    "get_output_single": (nn.get_output_single, [HANDLE_CTX, HANDLE_EXEC, arg(0, 1), BUFFER]),
    "fini_single": (nn.fini_single, [HANDLE_CTX, HANDLE_EXEC]),
    "run_inference": (nn.run_inference, [HANDLE_CTX, HANDLE_EXEC, arg(0), PROMPT, BUFFER,
                                         arg(None, GOOD_RUN), arg(None)]),
}
PAIRS = {"init_backend", "init_backend_with_config", "load", "load_by_name",
         "load_by_name_with_config", "init_execution_context",
         "init_execution_context_with_session_id", "get_output", "get_output_single",
         "run_inference"}


def test_every_function_is_covered():
    public = {name for name in dir(nn) if callable(getattr(nn, name))
              and getattr(getattr(nn, name), "__module__", "") == nn.__name__
              and not name.startswith("_") and name[0].islower()}
    assert public - {"backend_of", "finalize_execution_context"} == set(FUNCTIONS)


class World:
    """A backend, a graph and an execution context that the calls use; made again when a
    call ends them (deinit_backend, unload, close)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.ctx = self.graph = self.exec = None
        self.made: list[int] = []   # backends a call made: deinitialized after it
        self.renew()

    def renew(self) -> None:
        if self.ctx is not None:
            nn.deinit_backend(self.ctx)
        code, self.ctx = nn.init_backend_with_config(QUIET)
        assert code == E.SUCCESS
        code, self.graph = nn.load_by_name_with_config(self.ctx, self.model, None, QUIET)
        assert code == E.SUCCESS
        code, self.exec = nn.init_execution_context(self.ctx, self.graph)
        assert code == E.SUCCESS

    def resolve(self, value):
        if isinstance(value, Live):
            return self.model if value is MODEL else getattr(self, value.name)
        return value

    def check_still_works(self) -> None:
        for ctx in self.made:
            nn.deinit_backend(ctx)
        self.made.clear()
        code, ex = nn.init_execution_context(self.ctx, self.graph)
        if code != E.SUCCESS:   # the call deinitialized the backend or unloaded the graph
            assert code == E.NOT_FOUND, code
            self.renew()
            ex = self.exec
        out = bytearray(1024)
        code, size = nn.run_inference(self.ctx, ex, 0, "Hello", out, GOOD_RUN)
        assert code == E.SUCCESS and 0 < size <= len(out)
        if ex != self.exec:
            assert nn.close_execution_context(self.ctx, ex) == E.SUCCESS
        code, _ = nn.get_output(self.ctx, self.exec, 1, bytearray(8192))
        if code == E.NOT_FOUND:   # a call closed the shared context
            self.exec = nn.init_execution_context(self.ctx, self.graph)[1]


@pytest.fixture(scope="module")
def world(tiny_model_path):
    made = World(tiny_model_path)
    yield made
    nn.deinit_backend(made.ctx)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_exception_and_no_unknown(world, name, data):
    function, strategies = FUNCTIONS[name]
    hostile = data.draw(st.sets(st.integers(0, len(strategies) - 1), max_size=2)
                        if strategies else st.just(set()))
    args = [world.resolve(data.draw(HOSTILE if i in hostile else strategy))
            for i, strategy in enumerate(strategies)]
    result = function(*args)   # must not raise
    if name in PAIRS:
        assert isinstance(result, tuple) and len(result) == 2, result
        code, value = result
    else:
        code, value = result, None
    assert isinstance(code, E), result
    assert code != E.UNKNOWN, (name, args)
    if code == E.SUCCESS and name in ("init_backend", "init_backend_with_config"):
        world.made.append(value)
    world.check_still_works()
