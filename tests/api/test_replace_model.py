"""Hot swap without downtime: the new model loads while the old one serves; then new sessions get
the new model, sessions opened before finish their chats on the old one, which is freed when its
last session closes. A failed load leaves the old model serving. Under a load of concurrent
chats across the swap, every reply succeeds and equals what its model gives alone (greedy)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.testing.tiny_model import write_not_gguf
from wasi_nn_backend.errors import ErrorCode as E
from wasi_nn_backend.errors import (InvalidArgument, InvalidEncoding, ModelNotFound, NotFound,
                                    TooLarge)

CONFIG = {"model": {"n_ctx": 512, "n_seq_max": 4}, "logging": {"level": "error"}}
GREEDY = {"temperature": 0, "max_tokens": 10}
WAIT = 60   # seconds: a bound for a wedged test, never a pause
WORDS = "cat dog sun story world night water time people model".split()


def turns(i: int) -> list[str]:
    return [f"Hello {WORDS[i % len(WORDS)]}", "Tell me a story", "Good night"]


def chat_alone(path: str, messages: list[str]) -> list[str]:
    """The replies ``path`` gives to one conversation with nothing else running."""
    with Backend(CONFIG) as backend:
        session = backend.load(path, CONFIG).session()
        return [session.chat(m, **GREEDY).text for m in messages]


@pytest.fixture(scope="module")
def alone(tiny_model_path, tiny_model_path_b):
    cache: dict[tuple[str, int], list[str]] = {}

    def replies(path: str, i: int) -> list[str]:
        if (path, i) not in cache:
            cache[(path, i)] = chat_alone(path, turns(i))
        return cache[(path, i)]
    return replies


def test_swap_under_concurrent_chats(tiny_model_path, tiny_model_path_b, alone):
    backend = Backend(CONFIG)
    graph = backend.load(tiny_model_path, CONFIG)
    old = graph.current
    opened = [threading.Event() for _ in range(6)]
    go = threading.Event()

    def early(i: int) -> tuple[str, list[str]]:
        """Opened before the swap; turns 2 and 3 run while it happens."""
        session = graph.session()
        replies = [session.chat(turns(i)[0], **GREEDY).text]
        opened[i].set()
        assert go.wait(WAIT)
        for message in turns(i)[1:]:
            stream = session.chat_stream(message, **GREEDY)
            replies.append(stream.result().text)
        path = session.loaded.path
        session.close()
        return path, replies

    def anytime(i: int) -> tuple[str, list[str]]:
        """Opened while the swap runs: on either model, consistently."""
        with graph.session() as session:
            return session.loaded.path, [session.chat(m, **GREEDY).text for m in turns(i)]

    with ThreadPoolExecutor(12) as pool:
        early_runs = [pool.submit(early, i) for i in range(6)]
        assert all(event.wait(WAIT) for event in opened)
        swap = pool.submit(graph.replace_model, tiny_model_path_b, CONFIG)
        go.set()
        racing = [pool.submit(anytime, 10 + i) for i in range(4)]
        assert swap.result(WAIT) is graph                         # the same handle
        late = [pool.submit(anytime, 20 + i) for i in range(4)]
        results = [(i, f.result(WAIT)) for i, f in enumerate(early_runs)]
        results += [(10 + i, f.result(WAIT)) for i, f in enumerate(racing)]
        results += [(20 + i, f.result(WAIT)) for i, f in enumerate(late)]
    for i, (path, replies) in results:
        if i < 10:
            assert path == tiny_model_path          # a conversation stays on its model
        if i >= 20:
            assert path == tiny_model_path_b        # every session after the swap: new model
        assert replies == alone(path, i), (i, path)
    assert graph.current.path == tiny_model_path_b
    assert old.freed and not old.engine.alive    # its last session closed: freed
    assert graph.retired == [] and backend.stats().models_loaded == 1
    backend.close()


def test_old_model_lives_until_its_last_session_closes(tiny_model_path, tiny_model_path_b,
                                                       alone):
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        old_session = graph.session()
        first = old_session.chat(turns(0)[0], **GREEDY).text
        old = graph.current
        graph.replace_model(tiny_model_path_b, CONFIG)
        assert not old.freed and graph.retired == [old]
        assert graph.info()["old_models_serving"] == 1
        assert backend.stats().models_loaded == 2
        assert backend.model_memory_bytes == old.footprint.total_bytes \
            + graph.current.footprint.total_bytes
        new_session = graph.session()
        assert new_session.loaded is graph.current
        rest = [old_session.chat(m, **GREEDY).text for m in turns(0)[1:]]
        assert [first, *rest] == alone(tiny_model_path, 0)
        assert [new_session.chat(m, **GREEDY).text for m in turns(1)] \
            == alone(tiny_model_path_b, 1)
        old_session.close()
        assert old.freed and graph.retired == []
        assert backend.model_memory_bytes == graph.current.footprint.total_bytes


def test_idle_cleanup_frees_the_old_model(tiny_model_path, tiny_model_path_b):
    from wasi_nn_backend.engine.clock import FakeClock
    clock = FakeClock()
    config = {**CONFIG, "backend": {"idle_timeout_ms": 1000}}
    with Backend(config, clock=clock) as backend:
        graph = backend.load(tiny_model_path, config)
        graph.session().complete("Hi", **GREEDY)
        old = graph.current
        graph.replace_model(tiny_model_path_b, config)
        clock.advance(2)
        backend.cleanup_idle()
        assert old.freed


def test_swap_with_no_sessions_frees_the_old_model_at_once(tiny_model_path, tiny_model_path_b):
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        old = graph.current
        assert graph.replace_model(tiny_model_path_b, CONFIG) is graph
        assert old.freed and graph.current.path == tiny_model_path_b
        same = graph.current
        assert graph.replace_model(tiny_model_path_b, CONFIG) is graph and graph.current is same


def test_failed_swaps_leave_the_old_model_serving(tiny_model_path, tmp_path, alone):
    limit = {**CONFIG, "memory": {"max_model_memory_mb": 12}}
    with Backend(limit) as backend:
        graph = backend.load(tiny_model_path, limit)
        session = graph.session()
        old = graph.current
        bad = [(tmp_path / "missing.gguf", CONFIG, ModelNotFound),
               (write_not_gguf(tmp_path / "x.gguf"), CONFIG, InvalidEncoding),
               (tiny_model_path, {"model": {"n_ctx": 65536, "n_seq_max": 8}}, TooLarge)]
        for path, config, error in bad:
            with pytest.raises(error):
                graph.replace_model(path, config)
            assert graph.current is old and not old.freed and old.engine.alive
        assert [session.chat(m, **GREEDY).text for m in turns(0)] == alone(tiny_model_path, 0)
        with pytest.raises(InvalidArgument):
            backend.replace_model(graph.handle, tiny_model_path, CONFIG)   # a handle is not a Graph
        with pytest.raises(InvalidArgument):
            graph.replace_model(None, CONFIG)
        graph.close()
        with pytest.raises(NotFound):
            graph.replace_model(tiny_model_path, CONFIG)


# -- the function API: the original's model switch, with backend.hot_swap ---------------------
def test_function_api_hot_swap_under_concurrent_chats(tiny_model_path, tiny_model_path_b,
                                                      tmp_path, alone):
    code, ctx = nn.init_backend_with_config(
        '{"backend": {"hot_swap": true}, "logging": {"level": "error"}}')
    model = '{"model": {"n_ctx": 512, "n_seq_max": 4}}'
    runtime = '{"temperature": 0, "max_tokens": 10}'
    code, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, model)
    assert code == E.SUCCESS
    opened = [threading.Event() for _ in range(4)]
    go = threading.Event()

    def converse(i: int, wait: bool) -> tuple[str, list[str]]:
        code, exec_ctx = nn.init_execution_context(ctx, graph)
        assert code == E.SUCCESS
        replies = []
        for n, message in enumerate(turns(i)):
            out = bytearray(4096)
            code, size = nn.run_inference(ctx, exec_ctx, 0, message, out, runtime)
            assert code == E.SUCCESS, code
            replies.append(bytes(out[:size - 1]).decode())
            if wait and n == 0:
                opened[i].set()
                assert go.wait(WAIT)
        path = nn.backend_of(ctx).session(exec_ctx).loaded.path
        assert nn.close_execution_context(ctx, exec_ctx) == E.SUCCESS
        return path, replies

    with ThreadPoolExecutor(8) as pool:
        early = [pool.submit(converse, i, True) for i in range(4)]
        assert all(event.wait(WAIT) for event in opened)
        go.set()
        # failed switches: the old model keeps serving
        missing = str(tmp_path / "missing.gguf")
        assert nn.load_by_name_with_config(ctx, missing, None, model)[0] == E.MODEL_NOT_FOUND
        not_gguf = str(write_not_gguf(tmp_path / "x.gguf"))
        assert nn.load_by_name_with_config(ctx, not_gguf, None, model)[0] == E.INVALID_ENCODING
        code, swapped = nn.load_by_name_with_config(ctx, tiny_model_path_b, None, model)
        assert (code, swapped) == (E.SUCCESS, graph)            # the same handle
        late = [pool.submit(converse, 10 + i, False) for i in range(4)]
        for i, future in enumerate(early):
            assert future.result(WAIT) == (tiny_model_path, alone(tiny_model_path, i))
        for i, future in enumerate(late):
            assert future.result(WAIT) == (tiny_model_path_b, alone(tiny_model_path_b, 10 + i))
    backend = nn.backend_of(ctx)
    assert len(backend.graphs) == 1 and backend.stats().models_loaded == 1
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_without_hot_swap_a_second_model_loads_beside(tiny_model_path, tiny_model_path_b):
    code, ctx = nn.init_backend_with_config('{"logging": {"level": "error"}}')
    _, a = nn.load_by_name_with_config(ctx, tiny_model_path, None, None)
    _, b = nn.load_by_name_with_config(ctx, tiny_model_path_b, None, None)
    assert a != b and len(nn.backend_of(ctx).graphs) == 2
    # ... unless this load asks for it: it replaces the graph returned last
    _, c = nn.load_by_name_with_config(ctx, tiny_model_path, None,
                                       '{"hot_swap": true, "ctx_size": 1024}')
    assert c == b and nn.backend_of(ctx).graph(b).path == tiny_model_path
    # a file and config already served is that graph, hot_swap or not
    _, d = nn.load_by_name_with_config(ctx, tiny_model_path, None, '{"hot_swap": true}')
    assert d == a
    nn.deinit_backend(ctx)
