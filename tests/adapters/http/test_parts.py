"""The server's parts without a server: the status table, request checking, and the session
pool's choice (longest shared prefix, affinity keys, LRU beyond its size, 503 when full)."""
from __future__ import annotations

import pytest

from wasi_nn_backend.adapters.http.errors import ApiError, error_response
from wasi_nn_backend.adapters.http.pool import SessionPool
from wasi_nn_backend.adapters.http.requests import chat_request, completion_request
from wasi_nn_backend.adapters.http.serve import parse_model_spec
from wasi_nn_backend.api import Backend, common_prefix
from wasi_nn_backend.config import RequestParams
from wasi_nn_backend.errors import (Busy, InvalidArgument, ModelNotFound, PromptTooLong,
                                    Timeout, Unknown)


@pytest.mark.parametrize("error, status", [(Busy("full"), 429), (InvalidArgument("x"), 400),
                                           (PromptTooLong("x"), 400), (ModelNotFound("x"), 404),
                                           (Timeout("x"), 504), (Unknown("x"), 500)])
def test_status_table(error, status):
    response = error_response(error)
    assert response.status_code == status
    assert ("retry-after" in response.headers) == (status == 429)


def test_requests_map_openai_names():
    gen = chat_request({"model": "m", "messages": [{"role": "developer", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_completion_tokens": 5, "logprobs": True, "stop": "x"}, RequestParams())
    assert gen.messages == [{"role": "system", "content": "ab"}]
    assert gen.overrides == {"max_tokens": 5, "stop": "x", "n_probs": 1}
    gen = completion_request({"model": "m", "prompt": ["p"], "logprobs": 3}, RequestParams())
    assert gen.prompt == "p" and gen.overrides["n_probs"] == 3


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "model"), ({"model": "m"}, "messages"),
    ({"model": "m", "messages": [], "n": 2}, "n"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": -7}, "seed"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True,
      "top_logprobs": 99}, "top_logprobs")])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(ApiError) as caught:
        chat_request(body, RequestParams())
    assert caught.value.status == 400 and caught.value.param == param


def test_model_specs():
    assert parse_model_spec("a:GGML:AUTO:/m/x.gguf") == ("a", "/m/x.gguf")
    assert parse_model_spec("/m/tiny-q8.gguf") == ("tiny-q8", "/m/tiny-q8.gguf")
    assert parse_model_spec("a:ggml:cpu:C:/x.gguf") == ("a", "C:/x.gguf")


def test_shared_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0


@pytest.fixture
def graph(tiny_model_path):
    with Backend({"logging": {"level": "warn"}}) as backend:
        yield backend.load(tiny_model_path, {"model": {"n_ctx": 256, "n_seq_max": 2}})


def _run(entry, pool, prompt: str) -> None:
    entry.session.complete(prompt, temperature=0, max_tokens=2)
    pool.release(entry)


def test_pool_picks_the_longest_shared_prefix(graph):
    pool = SessionPool(graph, size=3)
    model = graph.model
    tokens = {p: model.tokenize(p, add_special=True, parse_special=True)
              for p in ("alpha beta gamma", "delta epsilon")}
    first = pool.acquire(tokens["alpha beta gamma"])
    _run(first, pool, "alpha beta gamma")
    second = pool.acquire(tokens["delta epsilon"])
    assert second is not first   # nothing shared: a new session while there is room
    _run(second, pool, "delta epsilon")
    again = pool.acquire(model.tokenize("alpha beta gamma delta", add_special=True,
                                        parse_special=True))
    assert again is first
    pool.release(again)


def test_pool_keys_lru_and_full(graph):
    pool = SessionPool(graph, size=2)
    a = pool.acquire([], key="a")
    with pytest.raises(ApiError) as caught:
        pool.acquire([], key="a")
    assert caught.value.status == 429
    b = pool.acquire([])
    with pytest.raises(ApiError) as caught:
        pool.acquire([])
    assert caught.value.status == 503
    pool.release(a)
    pool.release(b)
    assert pool.acquire([], key="a") is a   # pinned: the same session
    c = pool.acquire([], key="c")   # full: b, the least recently used idle one, is closed
    assert b.session.closed and c.key == "c"
    assert pool.sessions() == [a.session, c.session]


def test_serve_needs_a_model(capsys):
    from wasi_nn_backend.adapters import cli
    assert cli.main(["serve"]) == 2
    assert "at least one MODEL" in capsys.readouterr().err


def test_serve_lets_every_sequence_generate_unless_told_otherwise():
    from wasi_nn_backend.adapters.http.serve import server_config
    assert server_config({})["backend"]["max_concurrent"] == 8          # n_seq_max's default
    assert server_config({"model": {"n_seq_max": 16}})["backend"]["max_concurrent"] == 16
    given = {"backend": {"max_concurrent": 3}, "model": {"n_seq_max": 16}}
    assert server_config(given) is given
    flat = {"max_concurrent": 2, "n_seq_max": 16}
    assert server_config(flat) is flat


def test_a_session_takes_token_ids(graph):
    model = graph.model
    text = "alpha beta gamma"
    tokens = model.tokenize(text, add_special=True, parse_special=True)
    with graph.session() as by_text, graph.session() as by_ids:
        want = by_text.complete(text, temperature=0, max_tokens=4)
        got = by_ids.complete(tokens, temperature=0, max_tokens=4)
        assert got.generated_tokens == want.generated_tokens
        assert got.prompt_tokens == len(tokens)
        for bad in ([model.n_vocab], [-1], [True], ["1"], [1.5]):
            with pytest.raises(InvalidArgument, match="token id"):
                by_ids.complete(bad)
        with pytest.raises(PromptTooLong):
            by_ids.complete([1] * 256)
        with pytest.raises(InvalidArgument, match="empty"):
            by_ids.complete([])


def test_a_request_is_tokenized_once(graph, monkeypatch):
    """The server tokenizes a prompt to pick its session, and hands the session the tokens."""
    from wasi_nn_backend.adapters.http.generation import ServedModel, _start
    served = ServedModel("tiny", graph, SessionPool(graph, size=2), 0)
    calls = []
    tokenize = graph.model.tokenize
    monkeypatch.setattr(graph.model, "tokenize",
                        lambda *a, **k: calls.append(a) or tokenize(*a, **k))
    entry, stream = _start(served, "alpha beta", {"temperature": 0, "max_tokens": 2}, None)
    assert stream.result().prompt_tokens == len(tokenize("alpha beta", add_special=True,
                                                         parse_special=True))
    served.pool.release(entry)
    assert len(calls) == 1


def test_a_full_pool_gives_a_new_turn_its_own_session(graph):
    """Stateless clients, every pooled session idle: a turn whose new part is most of its
    prompt (it shares under half) still goes to the session holding its conversation, not to
    the least recently used one (whose cache it would not share)."""
    pool = SessionPool(graph, size=2)
    model = graph.model

    def tokens(text):
        return model.tokenize(text, add_special=True, parse_special=True)
    old = {name: f"conversation {name} " + " ".join(f"{name}{i}" for i in range(8))
           for name in ("a", "b")}
    entries = {}
    for name in ("a", "b"):   # a is now the least recently used
        entries[name] = pool.acquire(tokens(old[name]))
        entries[name].session.complete(old[name], temperature=0, max_tokens=40,
                                       ignore_eos=True)
        pool.release(entries[name])
    turn = tokens(old["b"] + " and then a new question that is longer than what it shares "
                  "with the old one by quite a few words")
    held = list(entries["b"].session.state.kv_tokens)
    assert 2 * common_prefix(turn, held) < min(len(turn), len(held))   # under half
    assert pool.acquire(turn) is entries["b"]
