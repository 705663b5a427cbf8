"""Backend sampling (model.backend_sampling "on", here on the CPU backend): chains that can run
inside llama_decode's graph do, per sequence, and give what the host gives where the chain is
deterministic; the others sample on the host as before; nothing stays attached to the context
once its request ends (the context holds a borrowed pointer to the chain)."""
from __future__ import annotations

import pytest
from sessions_at_once import NO_DEADLINE, run_at_once

from wasi_nn_backend import Backend, FinishReason
from wasi_nn_backend.config import SamplingParams, parse_config
from wasi_nn_backend.engine.contexts import samples_in_graph
from wasi_nn_backend.llm.sampler_chain import backend_chain

PROMPTS = ["The quick brown fox", "Once upon a time", "In the beginning", "Hello world",
           "A B C D", "1 2 3 4 5", "Numbers and words", "Zebra crossing"]


def load(backend, path, mode, **model):
    return backend.load(path, {"model": {"n_ctx": 256, "n_seq_max": 8, "n_batch": 64,
                                         "backend_sampling": mode, **model}})


def run_all(graph, asks, seen=None):
    """Every prompt on its own session, all at once; the completions. ``seen`` collects the
    sequences sampled in the graph at some step."""
    engine = graph.engine
    if seen is not None:
        sync = engine.backend_samplers.sync

        def watching(wanted):
            sync(wanted)
            seen.update(engine.backend_samplers.attached)
        engine.backend_samplers.sync = watching
    return run_at_once(graph, PROMPTS, [{"max_tokens": 24, **ask} for ask in asks])


def host_then_graph(path, asks, **model):
    """The same requests sampled on the host, then in the graph where they can be: (the
    host's completions, the graph's, the sequences seen sampling in the graph); every
    chain detached from the context once all ended."""
    with Backend(NO_DEADLINE) as backend:
        host = load(backend, path, "off", **model)
        expected = run_all(host, asks)
        host.close()
        graph = load(backend, path, "on", **model)
        seen: dict = {}
        got = run_all(graph, asks, seen)
        assert graph.engine.backend_samplers.attached == {}
    return expected, got, seen


GREEDY = [{"temperature": 0}, {"temperature": 0, "ignore_eos": True},
          {"temperature": 0, "logit_bias": [[100, 5.0], [7, -1e9]]},
          {"temperature": 0.8, "top_k": 1, "seed": 3},          # top_k 1: deterministic
          {"temperature": 0, "repeat_penalty": 1.3},
          {"temperature": 0, "stop": ["e"]},
          {"temperature": 0, "max_tokens": 5},
          {"temperature": 0, "frequency_penalty": 0.5, "presence_penalty": 0.3}]


def test_deterministic_chains_in_the_graph_give_the_hosts_tokens(tiny_model_path):
    expected, got, seen = host_then_graph(tiny_model_path, GREEDY, deterministic=True)
    assert len(seen) >= 4   # sequences did sample in the graph
    for done, want in zip(got, expected):
        assert done.generated_tokens == want.generated_tokens
        assert done.text == want.text and done.finish_reason == want.finish_reason


def test_sampled_chains_in_the_graph_draw_what_the_host_draws(tiny_model_path):
    """Seeded top-k / top-p / min-p / temperature chains: in the graph, the host's tokens for
    the same seed (llama.cpp's backend dist draws from the same generator), run after run."""
    asks = [{"temperature": 0.9, "seed": 10 + i, "top_k": 40, "top_p": 0.9, "min_p": 0.02}
            for i in range(len(PROMPTS))]
    expected, first, seen = host_then_graph(tiny_model_path, asks, deterministic=True)
    with Backend(NO_DEADLINE) as backend:
        again = run_all(load(backend, tiny_model_path, "on", deterministic=True), asks)
    assert len(seen) == len(PROMPTS)
    assert [c.generated_tokens for c in first] == [c.generated_tokens for c in expected]
    assert [c.generated_tokens for c in first] == [c.generated_tokens for c in again]
    assert len({c.generated_tokens for c in first}) > 1
    assert all(c.finish_reason in (FinishReason.STOP, FinishReason.LENGTH) for c in first)


def test_what_the_graph_cannot_run_samples_on_the_host(tiny_model_path):
    """A grammar, n_probs, typical or XTC beside chains in the graph: the same results as
    all on the host, those never attached."""
    asks = [{"temperature": 0, "grammar": 'root ::= [a-z ]+ "."'}, {"temperature": 0},
            {"temperature": 0, "n_probs": 2}, {"temperature": 0},
            {"temperature": 0.7, "typical_p": 0.8, "seed": 1, "top_k": 1},
            {"temperature": 0.7, "xtc_probability": 0.5, "seed": 2, "top_k": 1},
            {"temperature": 0}, {"temperature": 0, "ignore_eos": True}]
    expected, got, seen = host_then_graph(tiny_model_path, asks, deterministic=True)
    for done, want in zip(got, expected):
        assert (done.generated_tokens, done.probs) == (want.generated_tokens, want.probs)
    assert 0 < len(seen) <= 4   # only the plain greedy ones


def test_batched_sessions_moving_between_sequences_keep_their_samplers(tiny_model_path):
    """Eight sessions decoding together, short and long ones: as some end, the others move
    to lower sequence ids (compaction) and their chains follow; the same greedy tokens as on
    the host, each alone."""
    asks = [{"temperature": 0, "max_tokens": 4 + 6 * (i % 3), "ignore_eos": True}
            for i in range(len(PROMPTS))]
    with Backend(NO_DEADLINE) as backend:
        host = load(backend, tiny_model_path, "off")
        alone = []
        for prompt, ask in zip(PROMPTS, asks):
            with host.session() as session:
                alone.append(session.complete(prompt, **ask).generated_tokens)
        host.close()
        graph = load(backend, tiny_model_path, "on")
        got = run_all(graph, asks)
        assert graph.engine.counters.steps < sum(len(a) for a in alone)   # batched
        assert graph.engine.backend_samplers.attached == {}
    assert [c.generated_tokens for c in got] == alone


@pytest.mark.parametrize("extra, ok", [
    ({}, True), ({"temperature": 0}, True), ({"logit_bias": ((3, 1.0),)}, True),
    ({"repeat_penalty": 1.2}, True), ({"grammar": "root ::= \"a\""}, False),
    ({"n_probs": 1}, False), ({"dry_multiplier": 0.5}, False), ({"mirostat": 2}, False),
    ({"typical_p": 0.5}, False), ({"xtc_probability": 0.3}, False),
    ({"top_n_sigma": 1.0}, False), ({"temperature": 0, "typical_p": 0.5}, True)])
def test_which_chains_can_run_in_the_graph(extra, ok):
    assert backend_chain(SamplingParams(**extra), 512) is ok


@pytest.mark.parametrize("mode, gpu_layers", [("auto", 0), ("auto", 99), ("on", 0), ("off", 99)])
def test_auto_is_on_only_with_gpu_layers_on_a_gpu_build(mode, gpu_layers):
    from wasi_nn_backend.llm.lib import supports_gpu_offload
    config, _ = parse_config({"model": {"backend_sampling": mode, "n_gpu_layers": gpu_layers}})
    expected = {"on": True, "off": False}.get(mode, gpu_layers != 0 and supports_gpu_offload())
    assert samples_in_graph(config.model) is expected


def test_a_chain_is_set_up_for_the_graph_once_and_moves_as_a_clone(tiny_model):
    """llama.cpp aborts when a chain is set up for the graph twice, and a set-up chain skips
    its samplers on the host: moving, waiting or coming back, a sampler goes on with a clone
    (same state); released, it is detached before it is freed."""
    from wasi_nn_backend.engine.backend_samplers import BackendSamplers
    from wasi_nn_backend.llm.context import Context
    from wasi_nn_backend.llm.sampler import Sampler
    with Context(tiny_model, n_ctx=256, n_batch=64, n_seq_max=4, n_threads=2,
                 kv_unified=False, outputs_per_seq=1) as context:
        samplers = BackendSamplers(context)
        one = Sampler(tiny_model, SamplingParams(temperature=0), n_ctx=64, backend=True)
        two = Sampler(tiny_model, SamplingParams(seed=4), n_ctx=64, backend=True)
        first = one.chain
        samplers.sync({0: one, 1: two})
        assert one.attached and two.attached and samplers.attached == {0: one, 1: two}
        samplers.sync({2: one, 1: two})          # one moved to sequence 2
        assert one.chain is not first and one.attached and samplers.attached == {2: one, 1: two}
        moved = one.chain
        samplers.sync({1: two})                  # one waits
        assert not one.attached and one.chain is not moved
        samplers.sync({0: one, 1: two})          # and comes back: no second set-up
        assert samplers.attached == {0: one, 1: two}
        for sampler in (one, two):
            samplers.release(sampler)
            assert not sampler.attached
            sampler.close()
        assert samplers.attached == {}
    with Context(tiny_model, n_ctx=64, n_batch=64, n_threads=2) as context:
        with Sampler(tiny_model, SamplingParams(), n_ctx=64, backend=True) as sampler:
            with pytest.raises(Exception, match="outputs_per_seq=1"):
                context.set_sampler(0, sampler.chain)


def test_mirostat_at_temperature_zero_samples_on_the_host(tiny_model_path):
    """Regression (review of issue 16): mirostat replaces greedy even at temperature 0, and has
    no graph version; it was attached, the graph left no token, and the engine died."""
    assert backend_chain(SamplingParams(temperature=0, mirostat=2), 512) is False
    with Backend(NO_DEADLINE) as backend:
        graph = load(backend, tiny_model_path, "on")
        with graph.session() as session:
            done = session.complete("Hello", temperature=0, mirostat=2, seed=1, max_tokens=6)
            assert done.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
            again = session.complete("Hello", temperature=0, max_tokens=4, ignore_eos=True)
            assert len(again.generated_tokens) == 4


def test_a_failing_sampler_fails_its_request_alone(tiny_model_path, monkeypatch):
    """A sampler that fails (here: the graph left it nothing to sample from) ends its own
    request with the error; the engine and the other requests go on."""
    from wasi_nn_backend.errors import BackendRuntimeError
    from wasi_nn_backend.llm.sampler import Sampler
    real = Sampler.sample

    def sample(self, context, index):
        if self.backend and self.attached and getattr(self, "doomed", False):
            raise BackendRuntimeError("the sampler chain left nothing to sample from")
        return real(self, context, index)
    monkeypatch.setattr(Sampler, "sample", sample)
    real_init = Sampler.__init__

    def init(self, model, params, **kwargs):
        real_init(self, model, params, **kwargs)
        self.doomed = params.seed == 666
    monkeypatch.setattr(Sampler, "__init__", init)
    with Backend(NO_DEADLINE) as backend:
        graph = load(backend, tiny_model_path, "on")
        asks = [{"temperature": 0, "seed": 666 if i == 3 else 1, "ignore_eos": True}
                for i in range(len(PROMPTS))]
        with pytest.raises(BackendRuntimeError, match="nothing to sample"):
            with graph.session() as session:
                session.complete(PROMPTS[3], **asks[3], max_tokens=4)
        done = run_all(graph, [{**a, "seed": 1} for a in asks])   # none doomed: all answer
        assert all(len(c.generated_tokens) == 24 for c in done)
        assert graph.engine.counters.snapshot()["failed"] == 1
