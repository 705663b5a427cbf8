"""Several models at once: each graph has its own engine thread; handles are never reused; a load
of a file already loaded with the same (parsed) config returns that graph; unload refuses new
sessions, cancels running requests, stops the engine and frees the model. Through the Python
API and the function API."""
from __future__ import annotations

import os

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.core.request import FinishReason
from wasi_nn_backend.errors import ErrorCode as E
from wasi_nn_backend.errors import NotFound
from nn_results import ok  # tests/nn_results.py

SMALL = {"model": {"n_ctx": 256, "n_seq_max": 2}}
GREEDY = {"temperature": 0, "max_tokens": 8}
ENDLESS = {"temperature": 0, "max_tokens": 5000, "ignore_eos": True}




@pytest.fixture
def backend():
    with Backend({"logging": {"level": "error"}}) as backend:
        yield backend


def test_two_models_serve_at_once_each_on_its_own_engine(backend, tiny_model_path,
                                                          tiny_model_path_b):
    a = backend.load(tiny_model_path, SMALL)
    b = backend.load(tiny_model_path_b, SMALL)
    assert a.handle != b.handle and a.engine is not b.engine
    assert a.engine._thread is not b.engine._thread
    assert a.engine.alive and b.engine.alive
    with a.session() as sa, b.session() as sb:
        stream_a = sa.complete_stream("Once upon", **GREEDY)
        stream_b = sb.complete_stream("Once upon", **GREEDY)
        assert stream_a.result().text != stream_b.result().text
    assert backend.stats().graphs == 2 and backend.stats().models_loaded == 2


def test_same_file_and_config_returns_the_loaded_graph(backend, tiny_model_path, tmp_path):
    graph = backend.load(tiny_model_path, SMALL)
    assert backend.load(tiny_model_path, SMALL) is graph
    # Equal once parsed: another spelling, a relative path, a symlink.
    assert backend.load(tiny_model_path, {"ctx_size": 256, "n_parallel": 2}) is graph
    relative = os.path.relpath(tiny_model_path)
    assert backend.load(relative, '{"model": {"n_ctx": 256, "n_seq_max": 2}}') is graph
    link = tmp_path / "link.gguf"
    link.symlink_to(tiny_model_path)
    assert backend.load(link, SMALL) is graph
    # Keys that change how a load happens, not what is served, do not count.
    assert backend.load(tiny_model_path, {**SMALL, "logging": {"level": "debug"}}) is graph
    assert len(backend.graphs) == 1
    # Any served setting differs: a second graph.
    other = backend.load(tiny_model_path, {"model": {"n_ctx": 128, "n_seq_max": 2}})
    sampling = backend.load(tiny_model_path, {**SMALL, "sampling": {"temperature": 0.1}})
    assert len({graph.handle, other.handle, sampling.handle}) == 3
    assert backend.load(tiny_model_path, SMALL) is graph


def test_a_rewritten_file_loads_again(backend, tiny_model_path, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(open(tiny_model_path, "rb").read())
    first = backend.load(path, SMALL)
    path.unlink()
    path.write_bytes(open(tiny_model_path, "rb").read() + b"\0" * 64)   # another file
    assert backend.load(path, SMALL) is not first


def test_concurrent_loads_of_one_model_load_it_once(backend, tiny_model_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(6) as pool:
        graphs = list(pool.map(lambda _: backend.load(tiny_model_path, SMALL), range(6)))
    assert len({id(g) for g in graphs}) == 1 and len(backend.graphs) == 1


def test_graph_handles_are_never_reused(backend, tiny_model_path):
    seen = set()
    for _ in range(4):
        graph = backend.load(tiny_model_path, SMALL)
        assert graph.handle not in seen
        seen.add(graph.handle)
        graph.close()
        with pytest.raises(NotFound):
            backend.graph(graph.handle)


def test_unload_cancels_running_requests_and_frees_the_model(backend, tiny_model_path):
    graph = backend.load(tiny_model_path, SMALL)
    loaded = graph.current
    session = graph.session()
    stream = session.complete_stream("Once upon a time", **ENDLESS)
    assert stream.get(timeout=30)                       # it is generating
    graph.close()
    completion = stream.result()
    assert completion.finish_reason is FinishReason.CANCELLED
    assert completion.error().code is E.NOT_FOUND       # partial text kept, not a success
    assert loaded.freed and not loaded.engine.alive and loaded.model.closed
    assert session.closed
    with pytest.raises(NotFound):
        session.complete("Hi", **GREEDY)
    with pytest.raises(NotFound):
        graph.session()
    with pytest.raises(NotFound):
        backend.graph(graph.handle)
    assert backend.model_memory_bytes == 0 and backend.stats().models_loaded == 0


def test_unload_leaves_other_graphs_serving(backend, tiny_model_path, tiny_model_path_b):
    a = backend.load(tiny_model_path, SMALL)
    b = backend.load(tiny_model_path_b, SMALL)
    expected = b.session().complete("Hello", **GREEDY).text
    a.close()
    assert b.session().complete("Hello", **GREEDY).text == expected


# -- the function API ------------------------------------------------------------------------
@pytest.fixture
def ctx():
    handle = ok(nn.init_backend_with_config('{"logging": {"level": "error"}}'))
    yield handle
    nn.deinit_backend(handle)


def load(ctx, path, config='{"model": {"n_ctx": 256, "n_seq_max": 2}}'):
    return nn.load_by_name_with_config(ctx, str(path), None, config)


def chat(ctx, exec_ctx, text, runtime='{"temperature": 0, "max_tokens": 8}'):
    out = bytearray(4096)
    code, n = nn.run_inference(ctx, exec_ctx, 0, text, out, runtime)
    return code, bytes(out[:max(n or 1, 1) - 1]).decode()


def test_function_api_dedups_and_loads_several(ctx, tiny_model_path, tiny_model_path_b):
    g1 = ok(load(ctx, tiny_model_path))
    assert ok(load(ctx, tiny_model_path)) == g1
    assert ok(load(ctx, tiny_model_path, '{"ctx_size": 256, "n_parallel": 2}')) == g1
    assert ok(nn.load_by_name(ctx, str(tiny_model_path))) not in (g1, None)   # defaults
    g2 = ok(load(ctx, tiny_model_path_b))
    assert g2 != g1
    # graph=None means the graph a load returned last
    ok(load(ctx, tiny_model_path))
    named = ok(nn.init_execution_context_with_session_id(ctx, "alice"))
    assert nn.backend_of(ctx).session(named).graph.handle == g1


def test_function_api_unload(ctx, tiny_model_path, tiny_model_path_b):
    g1 = ok(load(ctx, tiny_model_path))
    g2 = ok(load(ctx, tiny_model_path_b))
    e1 = ok(nn.init_execution_context(ctx, g1))
    e2 = ok(nn.init_execution_context(ctx, g2))
    before = chat(ctx, e2, "Hello")
    assert nn.unload(ctx, g1) == E.SUCCESS
    assert chat(ctx, e1, "Hello")[0] == E.NOT_FOUND
    assert nn.init_execution_context(ctx, g1)[0] == E.NOT_FOUND
    assert nn.unload(ctx, g1) == E.NOT_FOUND
    assert nn.close_execution_context(ctx, e1) == E.NOT_FOUND
    e3 = ok(nn.init_execution_context(ctx, g2))
    assert chat(ctx, e3, "Hello") == before
    g3 = ok(load(ctx, tiny_model_path))
    assert g3 not in (g1, g2)                              # never reused
    assert nn.unload(ctx, None) == E.INVALID_ARGUMENT
    assert nn.unload(ctx, "1") == E.INVALID_ARGUMENT
    assert nn.load_by_name_with_config(ctx, None, None, None)[0] == E.INVALID_ARGUMENT
    assert load(ctx, tiny_model_path, '{"model": {"n_ctx": "big"}}')[0] == E.INVALID_ARGUMENT


def test_bad_model_paths_get_codes(backend, tmp_path):
    from wasi_nn_backend.errors import InvalidArgument, ModelNotFound
    for path in (None, "", b"", 5, "a\0b"):
        with pytest.raises(InvalidArgument):
            backend.load(path)
    with pytest.raises(ModelNotFound):
        backend.load(tmp_path)            # a directory
    assert backend.graphs == [] and backend.model_memory_bytes == 0


def test_unload_also_ends_requests_still_queued(backend, tiny_model_path):
    config = {"model": {"n_ctx": 256, "n_seq_max": 2}, "backend": {"max_concurrent": 1}}
    graph = backend.load(tiny_model_path, config)
    running = graph.session().complete_stream("Once upon a time", **ENDLESS)
    queued = graph.session().complete_stream("The little cat", **ENDLESS)  # waits its turn
    assert running.get(timeout=30)
    assert queued.try_get() is None and not queued.done
    graph.close()
    for stream in (running, queued):  # neither hangs: both end, cancelled, within one step
        assert stream.result(timeout=30).finish_reason is FinishReason.CANCELLED
