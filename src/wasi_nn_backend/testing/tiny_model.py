"""Tiny llama-architecture GGUF files for tests, written with the `gguf` package.

The model is random (seeded) but shaped like a real one: an SPM vocabulary with byte fallback
(so any UTF-8 text tokenizes and detokenizes exactly), ChatML control tokens with <|im_end|> as
end-of-turn, RoPE attention with grouped KV heads, SwiGLU FFN, F32 weights. F32 keeps greedy
results independent of how tokens are batched; the weight scales below were chosen (and checked,
see tests/llm/test_llm_tiny_model.py) so that greedy decoding produces varied tokens with clear
margins between the best and second-best logit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import gguf

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

UNK, BOS, EOS, IM_START, IM_END = 0, 1, 2, 3, 4
_SPECIALS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
BYTE_BASE = len(_SPECIALS)  # token id of <0x00>
# Std of the final logits (the hidden state is RMS-normed): see _weights.
OUTPUT_SCALE = 4.0
BYTE_ROW_DAMPING = 0.7

_WORDS = (
    "the of and to in is it you that he was for on are with as his they be at one have this "
    "from or had by word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like "
    "so these her long make thing see him two has look more day could go come did number "
    "sound no most people my over know water than call first who may down side been now find "
    "hello world yes model token text story once upon little cat dog ran sat happy sun "
    "user assistant system question answer good night"
).split()
_SUBWORDS = ("ing", "ed", "er", "ly", "tion", "es", "s", "re", "un", "est", "ness", "ment")
_PUNCT = ".,!?;:'\"-()[]{}<>/\\@#$%^&*_+=~`|"
_SPACE = "\u2581"  # SentencePiece's visible space


def _normal_tokens() -> list[str]:
    """Normal pieces, most general first: every prefix of every word is present, so the SPM
    bigram merge can always grow a word one character at a time."""
    pieces: dict[str, None] = {}
    singles = [_SPACE, "\n"] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    singles += list("0123456789") + list(_PUNCT)
    for piece in singles:
        pieces[piece] = None
    for word in _WORDS + list(_SUBWORDS):
        for form in (_SPACE + word, word, _SPACE + word.capitalize(), word.capitalize()):
            for end in range(2, len(form) + 1):
                pieces[form[:end]] = None
    pieces[_SPACE * 2] = None
    pieces[_SPACE * 4] = None
    return list(pieces)


def _padding(pieces: list[str], size: int) -> list[str]:
    """More normal pieces until there are ``size``: lowercase letter pairs, then triples, with
    and without a leading space (every prefix of a piece is itself a piece)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen = set(pieces)
    pairs = [a + b for a in letters for b in letters]
    extra = [p for p in pairs + [_SPACE + p for p in pairs] if p not in seen]
    triples = [p + c for p in pairs for c in letters]
    extra += [p for p in triples + [_SPACE + p for p in triples] if p not in seen]
    if len(extra) < size - len(pieces):
        raise ValueError(f"cannot pad the vocabulary to {size} pieces")
    return pieces + extra[:size - len(pieces)]


def vocab(size: int | None = None) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of the tiny vocabulary; ``size`` pads it with more
    normal pieces (a benchmark model with a real-sized vocabulary)."""
    tokens = list(_SPECIALS)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    normals = _normal_tokens()
    if size is not None:
        normals = _padding(normals, size - len(tokens))
    tokens += normals
    types += [gguf.TokenType.NORMAL] * len(normals)
    # Longer pieces score higher so merges prefer whole words; specials and bytes never merge.
    scores = [0.0] * BYTE_BASE + [-1000.0] * 256
    scores += [float(len(p)) + (0.5 if p.startswith(_SPACE) else 0.0) for p in normals]
    return tokens, scores, [int(t) for t in types]


def _weights(rng: np.random.Generator, n_vocab: int, n_embd: int, n_layer: int,
             n_head: int, n_head_kv: int, n_ff: int) -> dict[str, np.ndarray]:
    """Random weights. Numpy shape is (out, in), which GGUF stores as ggml's (in, out)."""
    head_dim = n_embd // n_head

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # Attention/FFN scaled like a trained net (1/sqrt(fan_in)); a strong residual from the
    # embedding and an output scale giving logits with std ~4: peaked but not one-hot.
    output = mat(n_vocab, n_embd, OUTPUT_SCALE / np.sqrt(n_embd))
    # Byte-fallback rows (and <unk>, <s>, <|im_start|>) are damped so greedy text is whole
    # pieces: valid UTF-8, readable in test failures. Sampling still picks them now and then.
    # The EOG rows (</s>, <|im_end|>) are not damped; tests that need an end force it.
    output[BYTE_BASE:BYTE_BASE + 256] *= BYTE_ROW_DAMPING
    output[[UNK, BOS, IM_START]] *= BYTE_ROW_DAMPING
    tensors = {"token_embd.weight": mat(n_vocab, n_embd, 1.0),
               "output_norm.weight": ones(n_embd),
               "output.weight": output}
    for i in range(n_layer):
        blk = f"blk.{i}."
        tensors.update({
            blk + "attn_norm.weight": ones(n_embd),
            blk + "attn_q.weight": mat(n_embd, n_embd, 2.0 / np.sqrt(n_embd)),
            blk + "attn_k.weight": mat(n_head_kv * head_dim, n_embd, 2.0 / np.sqrt(n_embd)),
            blk + "attn_v.weight": mat(n_head_kv * head_dim, n_embd, 1.0 / np.sqrt(n_embd)),
            blk + "attn_output.weight": mat(n_embd, n_embd, 1.0 / np.sqrt(n_embd)),
            blk + "ffn_norm.weight": ones(n_embd),
            blk + "ffn_gate.weight": mat(n_ff, n_embd, 1.0 / np.sqrt(n_embd)),
            blk + "ffn_up.weight": mat(n_ff, n_embd, 1.0 / np.sqrt(n_embd)),
            blk + "ffn_down.weight": mat(n_embd, n_ff, 1.0 / np.sqrt(n_ff)),
        })
    return tensors


def _write_metadata(writer: gguf.GGUFWriter, *, name: str, n_embd: int, n_layer: int,
                    n_head: int, n_head_kv: int, n_ff: int, n_ctx_train: int,
                    chat_template: str | None, n_vocab: int | None, causal: bool,
                    pooling_type: int | None) -> None:
    writer.add_name(name)
    write_llama_metadata(writer, vocab(n_vocab), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                         n_head_kv=n_head_kv, n_ff=n_ff, n_ctx_train=n_ctx_train,
                         head_dim=n_embd // n_head, chat_template=chat_template)
    if not causal:  # bidirectional attention, as embedding models (BERT-like) have
        writer.add_causal_attention(False)
    if pooling_type is not None:  # llama.cpp's number: 1 mean, 2 cls, 3 last, 4 rank
        writer.add_pooling_type(gguf.PoolingType(pooling_type))


def write_llama_metadata(writer: gguf.GGUFWriter, spm_vocab: tuple[list, list, list], *,
                         n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int,
                         n_ctx_train: int, head_dim: int, chat_template: str | None,
                         rope_base: float = 10000.0, eps: float = 1e-5) -> None:
    """The llama hyperparameters and an SPM vocabulary (tokens, scores, types) with this
    module's special-token ids; F32 tensors. Shared with tools/train_demo_model.py."""
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_base)
    writer.add_layer_norm_rms_eps(eps)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = spm_vocab
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_eot_token_id(IM_END)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)


def write_tiny_llama(path: str | os.PathLike[str], *, seed: int = 0, n_embd: int = 64,
                     n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128,
                     n_ctx_train: int = 4096, chat_template: str | None = CHATML,
                     quant: str | None = None, n_vocab: int | None = None, causal: bool = True,
                     pooling_type: int | None = None) -> Path:
    """Write a tiny random llama GGUF to ``path`` and return it.

    ``causal=False`` and ``pooling_type`` make it look like an embedding model (bidirectional
    attention, the GGUF naming its pooling).

    ``quant`` (e.g. "q8_0") writes F32 to a side file and quantizes it with llama.cpp
    (through the llm layer), for tests and benchmarks that need a quantized model.
    ``n_vocab`` pads the vocabulary to that many tokens (bench/make_model.py: 32000).
    """
    path = Path(path)
    if quant is not None:
        from ..llm.lib import quantize_model
        f32_path = path.with_name(path.stem + ".f32.gguf")
        write_tiny_llama(f32_path, seed=seed, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                         n_head_kv=n_head_kv, n_ff=n_ff, n_ctx_train=n_ctx_train,
                         chat_template=chat_template, n_vocab=n_vocab, causal=causal,
                         pooling_type=pooling_type)
        quantize_model(f32_path, path, quant)
        f32_path.unlink()
        return path
    n_vocab = len(vocab(n_vocab)[0])
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_metadata(writer, name=f"tiny-llama-seed{seed}", n_embd=n_embd, n_layer=n_layer,
                    n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff, n_ctx_train=n_ctx_train,
                    chat_template=chat_template, n_vocab=n_vocab, causal=causal,
                    pooling_type=pooling_type)
    for name, array in _weights(rng, n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_not_gguf(path: str | os.PathLike[str]) -> Path:
    """A file that exists and is readable but is not GGUF."""
    path = Path(path)
    path.write_bytes(b"NOTGGUF" + bytes(range(256)) * 4)
    return path
