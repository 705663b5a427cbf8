"""Grammars in llm.Sampler: GBNF, JSON schema, lazy triggers, and the cases where llama.cpp
would std::terminate or GGML_ABORT (they must raise instead)."""
from __future__ import annotations

import json
import re

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import SamplingParams
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.gbnf import check_gbnf_text
from wasi_nn_backend.llm.grammar import GrammarRejected, check_grammar
from wasi_nn_backend.llm.sampler import Sampler

from sampling_loop import sample_text

GREEDY = {"temperature": 0.0}


@pytest.fixture(scope="module")
def ctx(tiny_model):
    with Context(tiny_model, n_ctx=512, n_batch=64, n_threads=2) as context:
        yield context


def generate(ctx, params, prompt="Hello world", steps=24):
    """Sampled text until EOG or `steps` tokens, as a string."""
    return sample_text(ctx, params, prompt, steps)[0]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_gbnf_constrains_output(ctx, seed):
    params = SamplingParams(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=seed,
                            grammar='root ::= "yes" | "no"')
    assert generate(ctx, params) in ("yes", "no")


def test_gbnf_greedy_and_with_other_samplers(ctx):
    grammar = 'root ::= "the " ("cat" | "dog") " sat" [.!]'
    text = generate(ctx, SamplingParams(**GREEDY, grammar=grammar))
    assert re.fullmatch(r"the (cat|dog) sat[.!]", text)
    text = generate(ctx, SamplingParams(seed=5, grammar=grammar, repeat_penalty=1.3,
                                        dry_multiplier=0.5, xtc_probability=0.5,
                                        logit_bias=((700, 5.0),)))
    assert re.fullmatch(r"the (cat|dog) sat[.!]", text)
    for mirostat in (1, 2):
        text = generate(ctx, SamplingParams(mirostat=mirostat, seed=5, grammar=grammar))
        assert re.fullmatch(r"the (cat|dog) sat[.!]", text)


def test_json_schema(ctx):
    schema = json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}},
                         "required": ["ok"]})
    text = generate(ctx, SamplingParams(temperature=0.7, seed=3, json_schema=schema), steps=40)
    assert isinstance(json.loads(text)["ok"], bool)


@pytest.mark.parametrize("grammar, problem", [
    ('root ::= "yes', "unexpected end of input"),
    ('foo ::= "x"', "root"),
    ("root ::= root \"x\"", "left recursion"),
    ("root ::= undefined", "undefined"),
    ("root ::= " + "(" * 300 + '"x"' + ")" * 300, "nests"),
    ('root ::= "a\0b"', "NUL"),
])
def test_bad_grammar_is_invalid_argument(ctx, grammar, problem):
    with pytest.raises(errors.InvalidArgument, match=re.compile(problem, re.I)):
        check_grammar(ctx.model, SamplingParams(grammar=grammar))
    with pytest.raises(errors.InvalidArgument):
        Sampler(ctx.model, SamplingParams(grammar=grammar), n_ctx=512)


@pytest.mark.parametrize("params", [
    SamplingParams(json_schema="{not json"),
    SamplingParams(json_schema='{"$ref": "https://example.com/schema.json"}'),
    SamplingParams(json_schema='{"type": "object"}', grammar='root ::= "x"'),
    SamplingParams(grammar='root ::= "x"', grammar_lazy=True),
    SamplingParams(grammar='root ::= "x"', grammar_lazy=True, grammar_trigger_tokens=(10**6,)),
    SamplingParams(grammar='root ::= "x"', grammar_lazy=True, grammar_trigger_patterns=("(",)),
])
def test_bad_schema_and_triggers_are_invalid_argument(ctx, params):
    with pytest.raises(errors.InvalidArgument):
        check_grammar(ctx.model, params)


def test_check_grammar_accepts_good_and_empty(ctx):
    check_grammar(ctx.model, SamplingParams())
    check_grammar(ctx.model, SamplingParams(grammar='root ::= [a-z]+ "\\n"'))
    check_gbnf_text('root ::= "((" x  # a comment with ((((\nx ::= [(]')


def test_complete_grammar_with_ignore_eos_raises_not_aborts(ctx):
    params = SamplingParams(**GREEDY, ignore_eos=True, grammar='root ::= "yes" | "no"')
    with pytest.raises(GrammarRejected) as info:
        generate(ctx, params)
    assert info.value.complete


def test_lazy_grammar_waits_for_its_trigger_word(ctx):
    free = generate(ctx, SamplingParams(**GREEDY), steps=12)
    assert " assistant" in free  # the greedy text the trigger below fires on
    head = free[: free.index("assistant")]
    params = SamplingParams(**GREEDY, grammar='root ::= "assistant" [a-z ]*', grammar_lazy=True,
                            grammar_trigger_words=("assistant",))
    text = generate(ctx, params, steps=20)
    assert text.startswith(head + "assistant")
    assert re.fullmatch(r"[a-z ]*", text[len(head) + len("assistant"):])


def test_lazy_grammar_trigger_pattern_and_token(ctx):
    model = ctx.model
    token = model.tokenize(" assistant", add_special=False, parse_special=False)
    assert len(token) == 1
    by_token = SamplingParams(**GREEDY, grammar='root ::= " assistant" [a-z]*',
                              grammar_lazy=True, grammar_trigger_tokens=tuple(token))
    assert re.search(r" assistant[a-z]*$", generate(ctx, by_token, steps=20))
    by_pattern = SamplingParams(**GREEDY, grammar='root ::= "ass" [a-z]*', grammar_lazy=True,
                                grammar_trigger_patterns=(r"[\s\S]*?(ass)[\s\S]*",))
    assert re.search(r"ass[a-z]*$", generate(ctx, by_pattern, steps=20))


def test_lazy_trigger_text_the_grammar_rejects_raises(ctx):
    params = SamplingParams(**GREEDY, grammar='root ::= "xyz"', grammar_lazy=True,
                            grammar_trigger_words=("assistant",))
    with pytest.raises(GrammarRejected, match="triggered"):
        generate(ctx, params, steps=12)


def test_lazy_grammar_that_never_triggers_is_unconstrained(ctx):
    params = SamplingParams(**GREEDY, grammar='root ::= "x"', grammar_lazy=True,
                            grammar_trigger_words=("zzzz",))
    assert generate(ctx, params, steps=10) == generate(ctx, SamplingParams(**GREEDY), steps=10)


def test_grammar_reset_starts_over(ctx):
    batch = Batch(8)
    ctx.seq_rm(0)
    batch.add(1, 0, 0, True)
    assert ctx.decode(batch) == 0
    params = SamplingParams(**GREEDY, grammar='root ::= "yes"')
    with Sampler(ctx.model, params, n_ctx=512) as sampler:
        first = sampler.sample(ctx, 0)
        sampler.reset()
        assert sampler.sample(ctx, 0) == first
