"""llm.Model: loading errors, vocabulary, tokenizer round trips, chat templates."""
from __future__ import annotations

import logging

import pytest

from wasi_nn_backend.testing.tiny_model import BOS, EOS, IM_END, IM_START, write_not_gguf, write_tiny_llama
from wasi_nn_backend import errors
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.lib import build_info
from wasi_nn_backend.llm.model import Model


def test_missing_file_is_model_not_found(tmp_path):
    with pytest.raises(errors.ModelNotFound):
        Model.load(tmp_path / "nope.gguf")


def test_directory_is_model_not_found(tmp_path):
    with pytest.raises(errors.ModelNotFound):
        Model.load(tmp_path)


def test_not_gguf_is_invalid_encoding(tmp_path):
    with pytest.raises(errors.InvalidEncoding):
        Model.load(write_not_gguf(tmp_path / "x.gguf"))


def test_empty_file_is_invalid_encoding(tmp_path):
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(errors.InvalidEncoding):
        Model.load(tmp_path / "empty.gguf")


def test_truncated_gguf_is_runtime_error(tmp_path, tiny_model_path):
    data = open(tiny_model_path, "rb").read()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.BackendRuntimeError):
        Model.load(tmp_path / "cut.gguf")


def test_progress_callback_reports_and_can_cancel(tiny_model_path):
    seen = []
    with Model.load(tiny_model_path, progress=seen.append) as model:
        assert model.n_vocab > 0
    assert seen and seen[-1] == pytest.approx(1.0)
    with pytest.raises(errors.BackendRuntimeError, match="cancelled"):
        Model.load(tiny_model_path, progress=lambda fraction: False)


def test_facts(tiny_model):
    assert tiny_model.architecture == "llama"
    assert tiny_model.n_embd == 64 and tiny_model.n_layer == 2
    assert tiny_model.n_ctx_train == 4096
    assert tiny_model.n_params > 0 and tiny_model.size_bytes > 0
    assert tiny_model.bos_token == BOS and tiny_model.eos_token == EOS
    assert tiny_model.add_bos is True
    assert tiny_model.metadata["general.name"] == "tiny-llama-seed0"
    assert tiny_model.description


def test_eog_tokens(tiny_model):
    assert set(tiny_model.eog_tokens()) == {EOS, IM_END}
    assert tiny_model.is_eog(IM_END) and not tiny_model.is_eog(IM_START)
    assert not tiny_model.is_eog(-1) and not tiny_model.is_eog(tiny_model.n_vocab)
    assert tiny_model.valid_token(0) and not tiny_model.valid_token(tiny_model.n_vocab)


@pytest.mark.parametrize("text", [
    "Hello world, the cat sat.", "héllo wörld", "emoji 😀🎉 and CJK 中文字 and ☃",
    "  two  spaces\n\nnew lines\ttabs", "\x00nul and \x7f", "Ωmega ∑ 𝄞"])
def test_tokenize_round_trip(tiny_model, text):
    tokens = tiny_model.tokenize(text, add_special=False, parse_special=False)
    assert tokens and all(tiny_model.valid_token(t) for t in tokens)
    assert tiny_model.detokenize(tokens) == text
    assert b"".join(tiny_model.token_to_piece(t) for t in tokens) == text.encode()


def test_tokenize_bytes_and_special(tiny_model):
    with_bos = tiny_model.tokenize(b"the cat", add_special=True, parse_special=False)
    assert with_bos[0] == BOS and tiny_model.detokenize(with_bos) == "the cat"
    chat = tiny_model.tokenize("<|im_start|>user<|im_end|>", add_special=False,
                               parse_special=True)
    assert chat[0] == IM_START and chat[-1] == IM_END
    literal = tiny_model.tokenize("<|im_start|>", add_special=False, parse_special=False)
    assert IM_START not in literal
    assert tiny_model.token_to_piece(IM_END, special=True) == b"<|im_end|>"
    assert tiny_model.token_to_piece(IM_END) == b""


def test_tokenize_long_text_grows_buffer(tiny_model):
    text = "the cat sat on the mat. " * 400
    assert tiny_model.detokenize(tiny_model.tokenize(text, add_special=False,
                                                     parse_special=False)) == text


def test_bad_inputs_raise(tiny_model):
    with pytest.raises(errors.InvalidEncoding):
        tiny_model.tokenize(b"\xff\xfe bad", add_special=False, parse_special=False)
    with pytest.raises(errors.InvalidEncoding):
        tiny_model.tokenize("\ud800", add_special=False, parse_special=False)
    with pytest.raises(errors.InvalidArgument):
        tiny_model.token_to_piece(tiny_model.n_vocab)
    with pytest.raises(errors.InvalidArgument):
        tiny_model.token_to_piece(-1)


def test_render_chat_model_template(tiny_model):
    text = tiny_model.render_chat([{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "hi"}])
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    no_prompt = tiny_model.render_chat([{"role": "user", "content": "hi"}],
                                       add_generation_prompt=False)
    assert not no_prompt.endswith("assistant\n")


def test_render_chat_custom_template_and_errors(tiny_model):
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    assert tiny_model.render_chat([{"role": "user", "content": "x"}],
                                  template=template) == "<s>[user] x\n"
    with pytest.raises(errors.InvalidArgument, match="template"):
        tiny_model.render_chat([{"role": "user", "content": "x"}], template="{% for %}")
    with pytest.raises(errors.InvalidArgument, match="only users"):
        tiny_model.render_chat([{"role": "user", "content": "x"}],
                               template="{{ raise_exception('only users') }}")
    with pytest.raises(errors.InvalidArgument):
        tiny_model.render_chat([{"role": "user"}])
    with pytest.raises(errors.InvalidArgument):  # the sandbox refuses attribute games
        tiny_model.render_chat([], template="{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_model_without_template_falls_back_to_chatml(tmp_path):
    with Model.load(write_tiny_llama(tmp_path / "nt.gguf", chat_template=None)) as model:
        assert model.chat_template is None
        assert model.render_chat([{"role": "user", "content": "hi"}]).startswith(
            "<|im_start|>user\nhi<|im_end|>\n")


def test_close_is_idempotent_and_closes_contexts_first(tiny_model_path):
    model = Model.load(tiny_model_path)
    ctx = Context(model, n_ctx=64, n_batch=8, n_threads=1)
    model.close()
    assert ctx.closed and model.closed
    model.close()
    ctx.close()
    with pytest.raises(errors.BackendRuntimeError):
        model.tokenize("x", add_special=False, parse_special=False)


def test_build_info():
    info = build_info()
    assert info["llama_cpp_python"] == "0.3.36"
    # libggml's own record of the build (ggml_version(), ggml_commit()) and what follows from it
    assert info["ggml_version"] == "0.25.3" and info["ggml_commit"].startswith("0c1e570")
    assert info["llama_commit"] == "0c1e570" and info["llama_build_number"] == 11312
    assert info["max_parallel_sequences"] >= 64
    assert isinstance(info["system_info"], str)


def test_llama_log_lines_reach_python_logging(caplog, tiny_model_path):
    with caplog.at_level(logging.DEBUG, logger="wasi_nn_backend.llama"):
        Model.load(tiny_model_path).close()
    records = [r for r in caplog.records if r.name == "wasi_nn_backend.llama"]
    assert any("llama_model_loader" in r.getMessage() for r in records)
    assert all("\n" not in r.getMessage() and r.getMessage() for r in records)
    assert logging.DEBUG in {r.levelno for r in records}  # llama.cpp INFO is our DEBUG


def test_cycle_collection_never_frees_the_model_first(tiny_model_path):
    import gc
    import weakref

    from wasi_nn_backend.config import SamplingParams
    from wasi_nn_backend.llm.sampler import Sampler

    class Holder:  # an engine-like object in a reference cycle
        pass

    holder = Holder()
    holder.me = holder
    holder.model = Model.load(tiny_model_path)
    holder.ctx = Context(holder.model, n_ctx=64, n_batch=8, n_threads=1)
    holder.sampler = Sampler(holder.model, SamplingParams(grammar='root ::= "x"'), n_ctx=64)
    model_ref = weakref.ref(holder.model)
    del holder
    gc.collect()  # must not crash, whatever order the finalizers run in
    assert model_ref() is None


def test_model_closed_before_unreachable_context_is_freed_by_it(tiny_model_path):
    model = Model.load(tiny_model_path)
    ctx = Context(model, n_ctx=64, n_batch=8, n_threads=1)
    model._dependents.discard(ctx)  # as when a cycle's weak references are cleared first
    model.close()
    assert model.closed and model._handle is not None  # freeing waits for the context
    ctx.close()
    assert model._handle is None
