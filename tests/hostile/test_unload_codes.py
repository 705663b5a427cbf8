"""Requests caught by an unload or a hot swap report not_found, as the README documents, never
runtime_error: whichever step of the request the unload lands on (queued, running, being
tokenized on a model that is freed under it), and a file that is not GGUF is named as such
without quoting its contents."""
from __future__ import annotations

import json

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.config import request_params
from wasi_nn_backend.core.request import SequenceState
from wasi_nn_backend.errors import ErrorCode, InvalidEncoding, NotFound
from wasi_nn_backend.llm.model import Model

CONFIG = {"logging": {"level": "error"}, "model": {"n_ctx": 128, "threads": 1}}


def test_a_request_running_when_its_engine_closes_is_not_found(tiny_model_path):
    """The engine closes when its model is freed (unload, the last session of a swapped-out
    model, the backend closing): a request it still holds, whatever stage it is at, ends
    not_found; a request submitted after that too."""
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        engine = graph.engine
        params = request_params(graph.config).model_copy(
            update={"stopping": graph.config.stopping.model_copy(update={"max_tokens": -1})})
        stream = engine.submit(SequenceState(session_id=999), [1, 2, 3], params)
        engine.close()
        with pytest.raises(NotFound, match="unloaded"):
            stream.result()
        with pytest.raises(NotFound, match="unloaded"):
            engine.submit(SequenceState(session_id=998), [1, 2, 3], params)


def test_a_model_freed_under_a_closed_sessions_call_is_not_found(tiny_model_path, monkeypatch):
    """An unload that frees the model while a call of the session tokenizes on it: the call
    reports not_found (the session is gone), not the freed model's runtime_error."""
    with Backend(CONFIG) as backend:
        graph = backend.load(tiny_model_path, CONFIG)
        session = graph.session()
        real = Model.tokenize

        def unload_meanwhile(self, text, **kwargs):
            monkeypatch.setattr(Model, "tokenize", real)
            graph.close()          # closes the session and frees this very model
            return real(self, text, **kwargs)
        monkeypatch.setattr(Model, "tokenize", unload_meanwhile)
        with pytest.raises(NotFound):
            session.complete("Once upon a time", max_tokens=2)


def test_function_api_compute_after_unload_is_not_found(tiny_model_path, monkeypatch):
    code, ctx = nn.init_backend_with_config(json.dumps(CONFIG))
    try:
        code, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, json.dumps(CONFIG))
        code, ex = nn.init_execution_context(ctx, graph)
        assert nn.set_input(ctx, ex, 0, nn.Tensor([5], nn.TensorType.U8, b"Hello")) == 0
        real = Model.tokenize

        def unload_meanwhile(self, text, **kwargs):
            monkeypatch.setattr(Model, "tokenize", real)
            assert nn.unload(ctx, graph) == ErrorCode.SUCCESS
            return real(self, text, **kwargs)
        monkeypatch.setattr(Model, "tokenize", unload_meanwhile)
        assert nn.compute(ctx, ex) == ErrorCode.NOT_FOUND
    finally:
        nn.deinit_backend(ctx)


def test_a_file_that_is_not_gguf_is_not_quoted(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n")
    with Backend(CONFIG) as backend, pytest.raises(InvalidEncoding) as caught:
        backend.load(str(secret))
    assert "not a GGUF file" in caught.value.message
    assert "root" not in caught.value.message.replace(str(tmp_path), "")


def test_an_unload_waits_for_a_tokenize_in_progress(tiny_model_path, monkeypatch):
    """llama_tokenize runs on the caller's thread with the GIL released: an unload on another
    thread must not free the model under it (that was a segfault: set_input of a long prompt
    raced against unload). The unload waits for the call; the caller's later steps find the
    session gone."""
    import threading

    import llama_cpp.llama_cpp as C

    entered, unloading = threading.Event(), threading.Event()
    freed_under_the_call = []
    real = C.llama_tokenize

    def tokenize(*args):
        entered.set()
        assert unloading.wait(10)
        # The unload is under way: were the model freed now, this call would read freed
        # memory. Wait a while for that to (wrongly) happen; it must not.
        if closed.wait(0.3):
            freed_under_the_call.append(True)
            return 0
        return real(*args)
    monkeypatch.setattr(C, "llama_tokenize", tokenize)
    code, ctx = nn.init_backend_with_config(json.dumps(CONFIG))
    try:
        code, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, json.dumps(CONFIG))
        code, ex = nn.init_execution_context(ctx, graph)
        model = nn.backend_of(ctx).graph(graph).model
        closed = threading.Event()
        real_close = model.close
        monkeypatch.setattr(model, "close", lambda: (closed.set(), real_close()))
        result = {}
        caller = threading.Thread(target=lambda: result.setdefault("code", nn.set_input(
            ctx, ex, 0, nn.Tensor([5], nn.TensorType.U8, b"Hello"))))
        caller.start()
        assert entered.wait(10)
        unloader = threading.Thread(target=lambda: result.setdefault("unload", nn.unload(
            ctx, graph)))
        unloader.start()
        unloading.set()
        caller.join(10)
        unloader.join(10)
        assert not freed_under_the_call
        assert result == {"code": ErrorCode.SUCCESS, "unload": ErrorCode.SUCCESS}
        assert nn.compute(ctx, ex) == ErrorCode.NOT_FOUND
    finally:
        nn.deinit_backend(ctx)
