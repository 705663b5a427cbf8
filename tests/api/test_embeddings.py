"""session.embed on a graph loaded with embedding: true: one L2-normalized vector of n_embd
floats per text; deterministic; texts batched into shared decodes (within and across calls)
give what each gives alone; pooling and normalize settings; clear errors for bad input."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend.errors import (InvalidArgument, NotFound, PromptTooLong,
                                    UnsupportedOperation)

N_EMBD = 64
TEXTS = ["hello world", "the cat sat on the dog", "once upon a time there was a little model",
         "yes", "good night, happy sun!"]


def embed_config(**model):
    return {"logging": {"level": "error"}, "embedding": True,
            "model": {"n_ctx": 256, "threads": 1, **model}}


@pytest.fixture(scope="module")
def backend():
    with Backend({"logging": {"level": "error"}}) as backend:
        yield backend


@pytest.fixture(scope="module")
def graph(backend, tiny_model_path):
    return backend.load(tiny_model_path, embed_config())


@pytest.fixture
def session(graph):
    with graph.session() as session:
        yield session


def decodes(graph) -> int:
    return graph.engine.counters.embed_decodes


def test_a_vector_has_n_embd_floats_of_unit_length(session):
    vector = session.embed("hello world")
    assert len(vector) == N_EMBD and all(isinstance(v, float) for v in vector)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)   # L2, as llama.cpp's default


def test_a_list_gives_one_vector_per_text_in_order(session):
    vectors = session.embed(TEXTS)
    assert [len(v) for v in vectors] == [N_EMBD] * len(TEXTS)
    assert session.embed([]) == []


def test_the_same_text_gives_the_same_vector_every_time(session):
    assert session.embed("hello world") == session.embed("hello world")


def test_two_backends_give_the_same_vectors(graph, tiny_model_path):
    with Backend({"logging": {"level": "error"}}) as other:
        again = other.load(tiny_model_path, embed_config()).session().embed(TEXTS)
    with graph.session() as session:
        assert session.embed(TEXTS) == again


def test_identical_texts_in_one_batch_get_identical_vectors(session):
    vectors = session.embed(["hello world", "the cat sat on the dog", "hello world"])
    assert vectors[0] == vectors[2]
    assert vectors[0] != vectors[1]


def test_different_texts_give_different_vectors(session):
    vectors = np.array(session.embed(TEXTS))
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert np.abs(vectors[i] - vectors[j]).max() > 1e-2, (TEXTS[i], TEXTS[j])


def test_many_texts_share_one_decode_and_agree_with_each_alone(graph, session):
    before = decodes(graph)
    batched = session.embed(TEXTS)
    assert decodes(graph) == before + 1
    for text, vector in zip(TEXTS, batched):
        np.testing.assert_allclose(vector, session.embed(text), atol=1e-5)


def test_texts_beyond_n_seq_max_or_n_ubatch_take_more_decodes(backend, tiny_model_path, session):
    alone = session.embed(TEXTS)
    for settings, expected in (({"n_seq_max": 2}, 3), ({"n_ubatch": 16, "n_batch": 16}, 3)):
        graph = backend.load(tiny_model_path, embed_config(**settings))
        with graph.session() as small:
            vectors = small.embed(TEXTS)
        assert decodes(graph) == expected, settings
        np.testing.assert_allclose(vectors, alone, atol=1e-5)
        graph.close()


def test_deterministic_embeds_one_text_per_decode(backend, tiny_model_path, session):
    graph = backend.load(tiny_model_path, embed_config(deterministic=True))
    vectors = graph.session().embed(TEXTS[:3])
    assert decodes(graph) == 3
    assert vectors == [session.embed(text) for text in TEXTS[:3]]
    graph.close()


def test_calls_that_arrive_together_share_a_decode(graph):
    engine = graph.engine
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(30)
    blocked = engine.call(hold)             # the engine thread waits: both jobs queue up
    assert holding.wait(30)                 # (posted before it took the inbox, one would not)
    before = decodes(graph)
    futures = [engine.embed([graph.model.tokenize(t, add_special=True, parse_special=True)])
               for t in TEXTS[:2]]
    release.set()
    blocked.result()
    first, second = (f.result() for f in futures)
    assert decodes(graph) == before + 1
    with graph.session() as session:
        np.testing.assert_allclose([first[0], second[0]], session.embed(TEXTS[:2]), atol=1e-5)


def test_the_kv_is_empty_after_every_decode(graph, session):
    session.embed(TEXTS)
    ctx = graph.engine.context
    held = graph.engine.call(lambda: [ctx.seq_pos_max(s) for s in range(ctx.n_seq_max)])
    assert held.result() == [-1] * ctx.n_seq_max


# -- pooling and normalize ---------------------------------------------------------------------
def test_pooling_none_gives_one_vector_per_token(backend, tiny_model_path, graph):
    with backend.load(tiny_model_path, embed_config(pooling="none")) as per_token:
        rows = per_token.session().embed(TEXTS[:2])
        last = backend.load(tiny_model_path, embed_config(pooling="last"))
        tokens = [len(graph.model.tokenize(t, add_special=True, parse_special=True))
                  for t in TEXTS[:2]]
        assert [np.shape(r) for r in rows] == [(n, N_EMBD) for n in tokens]
        np.testing.assert_allclose([r[-1] for r in rows], last.session().embed(TEXTS[:2]),
                                   atol=1e-5)   # each row normalized: the last row is "last"
        last.close()


def test_cls_pooling_of_a_causal_model_sees_only_the_first_token(backend, tiny_model_path):
    with backend.load(tiny_model_path, embed_config(pooling="cls")) as cls:
        first, second = cls.session().embed(TEXTS[:2])
    assert first == second      # both start with BOS, which attends to nothing else


def test_an_embedding_models_own_pooling_is_used(backend, tiny_encoder_path):
    with backend.load(tiny_encoder_path, embed_config()) as encoder:
        assert encoder.engine.context.pooling == "cls"
        with encoder.session() as session:
            vectors = session.embed(TEXTS)
            np.testing.assert_allclose(vectors[1], session.embed(TEXTS[1]), atol=1e-5)
    # bidirectional attention: the first token sees the whole text
    assert np.abs(np.subtract(vectors[0], vectors[1])).max() > 1e-2


def test_rank_pooling_is_refused_unless_overridden(backend, tmp_path):
    reranker = str(write_tiny_llama(tmp_path / "rank.gguf", pooling_type=4))
    with pytest.raises(UnsupportedOperation, match="rank"):
        backend.load(reranker, embed_config())
    with backend.load(reranker, embed_config(pooling="mean")) as graph:
        assert len(graph.session().embed("hello")) == N_EMBD


@pytest.mark.parametrize("normalize, norm", [(False, None), (1, 1), (2, 2), (True, 2)])
def test_normalize(tiny_model_path, graph, normalize, norm):
    # A backend of its own: in the shared one an equal config returns (and closing would
    # unload) the shared graph.
    with Backend({"logging": {"level": "error"}}) as fresh:
        other = fresh.load(tiny_model_path, embed_config(normalize=normalize))
        vector = np.array(other.session().embed("hello world"), dtype=np.float64)
    reference = np.array(graph.session().embed("hello world"))
    if norm is None:
        assert np.linalg.norm(vector) > 2  # the raw hidden state
        np.testing.assert_allclose(vector / np.linalg.norm(vector), reference, atol=1e-6)
    else:
        assert np.linalg.norm(vector, ord=norm) == pytest.approx(1.0, abs=1e-6)


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("texts, error, words", [
    ("", InvalidArgument, "text 0 is empty"),
    (["fine", ""], InvalidArgument, "text 1 is empty"),
    (["fine", 3], InvalidArgument, "text 1 must be a string"),
    (42, InvalidArgument, "a string or a list"),
    ([b"\xff"], InvalidArgument, "UTF-8"),
    (["fine", "word " * 300], PromptTooLong, "text 1 has 302 tokens.*at most 256"),
])
def test_bad_texts_are_refused_and_the_graph_goes_on(session, texts, error, words):
    with pytest.raises(error, match=words):
        session.embed(texts)
    assert len(session.embed("still fine")) == N_EMBD


def test_the_limit_is_min_of_n_ctx_and_n_ubatch(backend, tiny_model_path):
    with backend.load(tiny_model_path, embed_config(n_ctx=64, n_batch=32)) as small:
        assert small.engine.embedder.limit == 32
        with pytest.raises(PromptTooLong, match="at most 32"):
            small.session().embed("word " * 40)
        assert len(small.session().embed("word " * 30)) == N_EMBD


def test_an_embedding_graph_does_not_generate(session):
    with pytest.raises(UnsupportedOperation, match="embedding: true"):
        session.chat("hello")
    with pytest.raises(UnsupportedOperation, match="embedding: true"):
        session.complete("hello")


def test_a_generating_graph_does_not_embed(backend, tiny_model_path):
    with backend.load(tiny_model_path, {"model": {"n_ctx": 64, "threads": 1}}) as generating:
        with pytest.raises(UnsupportedOperation, match="embedding: true"):
            generating.session().embed("hello")


def test_a_closed_session_or_graph_refuses(tiny_model_path):
    with Backend({"logging": {"level": "error"}}) as fresh:  # not the shared graph: closed here
        closing_a_graph_of_its_own(fresh.load(tiny_model_path, embed_config()))


def closing_a_graph_of_its_own(graph):
    session = graph.session()
    session.close()
    with pytest.raises(NotFound):
        session.embed("hello")
    session = graph.session()
    graph.close()
    with pytest.raises(NotFound):
        session.embed("hello")


def test_sessions_opened_before_a_swap_embed_with_their_model(tiny_model_path,
                                                               tiny_model_path_b):
    with Backend({"logging": {"level": "error"}}) as fresh:
        expected_b = fresh.load(tiny_model_path_b, embed_config()).session().embed("hello")
    with Backend({"logging": {"level": "error"}}) as fresh:
        graph = fresh.load(tiny_model_path, embed_config())
        before = graph.session()
        expected_a = before.embed("hello")
        graph.replace_model(tiny_model_path_b, embed_config())
        assert before.embed("hello") == expected_a       # still the model it was opened on
        assert graph.session().embed("hello") == expected_b
        graph.replace_model(tiny_model_path)                       # now a generating model
        assert before.embed("hello") == expected_a
        with pytest.raises(UnsupportedOperation):
            graph.session().embed("hello")
