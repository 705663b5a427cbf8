"""models/zen-demo.gguf, the committed demo model (tools/train_demo_model.py trained it to recite
the Zen of Python): llama.cpp, through the package's API, reproduces every line greedily from the
line's first words; and when torch is installed (a tool dependency only), llama.cpp's logits
equal the training code's forward pass on the same weights."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from wasi_nn_backend import Backend, FinishReason
from wasi_nn_backend.adapters.demo import prompt_words, zen_lines, zen_text

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "zen-demo.gguf"
TRAINER = ROOT / "tools" / "train_demo_model.py"


ZEN = zen_text()
LINES = zen_lines(ZEN)


def cases() -> list[tuple[str, str]]:
    """(prompt, rest of the line): each line from its first words, and from one word more."""
    out = []
    for line in LINES:
        words = line.split(" ")
        n = prompt_words(LINES, line)
        for count in sorted({n, min(n + 1, len(words) - 1)}):
            prompt = " ".join(words[:count])
            out.append((prompt, line[len(prompt):]))
    return out


@pytest.fixture(scope="module")
def graph():
    config = {"model": {"n_ctx": 512, "n_seq_max": 4}, "logging": {"level": "error"}}
    with Backend(config) as backend:
        yield backend.load(MODEL)


def test_model_is_small_spm_llama_with_chatml():
    assert MODEL.stat().st_size < 8 << 20
    from wasi_nn_backend.llm.model import Model

    with Model.load(MODEL) as model:
        meta = model.metadata
        assert model.architecture == "llama"
        assert meta["tokenizer.ggml.model"] == "llama"
        assert "<|im_start|>" in model.chat_template
        im_end = model.tokenize("<|im_end|>", add_special=False, parse_special=True)
        assert len(im_end) == 1 and model.is_eog(im_end[0])
        # byte fallback: any UTF-8 text round-trips
        text = "naïve ☃ 日本"
        assert model.detokenize(model.tokenize(text, add_special=False,
                                               parse_special=False)) == text


def test_every_line_continues_from_its_first_words(graph):
    failures = []
    with graph.session() as session:
        for prompt, rest in cases():
            got = session.complete(prompt, temperature=0, max_tokens=40).text
            if not (got + "\n").startswith(rest + "\n"):
                failures.append(f"{prompt!r}: wanted {rest!r}, got {got.split(chr(10))[0]!r}")
    assert not failures, "\n".join(failures)


def test_whole_text_from_its_first_words_then_stops(graph):
    prompt = " ".join(LINES[0].split(" ")[:2])
    with graph.session() as session:
        done = session.complete(prompt, temperature=0, max_tokens=400)
    assert prompt + done.text == ZEN
    assert done.finish_reason == FinishReason.STOP


def test_chat_recites_the_zen(graph):
    with graph.session() as session:
        done = session.chat("Recite the Zen of Python.", temperature=0, max_tokens=400)
    assert done.text == ZEN
    assert done.finish_reason == FinishReason.STOP


def test_llama_cpp_logits_match_the_training_forward_pass(monkeypatch):
    torch = pytest.importorskip("torch")  # a tool dependency: the runtime never needs it
    from wasi_nn_backend.llm.batch import Batch
    from wasi_nn_backend.llm.context import Context
    from wasi_nn_backend.llm.model import Model

    spec = importlib.util.spec_from_file_location("train_demo_model", TRAINER)
    trainer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, trainer)  # its dataclasses look it up
    spec.loader.exec_module(trainer)
    reference = trainer.DemoLlama.from_gguf(MODEL)

    with Model.load(MODEL) as model:
        tokens = model.tokenize(ZEN[:400], add_special=True, parse_special=False)
        with Context(model, n_ctx=256, n_batch=256, n_seq_max=1, n_threads=2,
                     flash_attn="off", type_k="f32", type_v="f32") as ctx:
            batch = Batch(len(tokens))
            for pos, token in enumerate(tokens):
                batch.add(token, pos, 0, True)
            assert ctx.decode(batch) == 0
            ours = np.stack([ctx.logits_row(i) for i in range(len(tokens))])
    with torch.no_grad():
        theirs = reference(torch.tensor([tokens]))[0].numpy()
    scale = float(np.abs(theirs).max())
    diff = float(np.abs(ours - theirs).max())
    assert diff < 1e-3 * scale, f"max |llama.cpp - torch| = {diff:.2e} at logit scale {scale:.1f}"
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()
