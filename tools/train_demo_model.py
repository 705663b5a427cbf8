"""Train models/zen-demo.gguf: a tiny llama model that recites the Zen of Python.

    .venv/bin/pip install torch==2.13.0      # a tool dependency only (CPU wheel)
    .venv/bin/python tools/train_demo_model.py

Steps:
1. The text is the Zen of Python, read from Python's own `this` module.
2. Vocabulary: a GGUF SPM vocab ("llama" tokenizer model): <unk> <s> </s> <|im_start|>
   <|im_end|>, the 256 byte-fallback tokens, every printable ASCII character, and each word of
   the text (with and without the leading SentencePiece space, plus all its prefixes so that the
   SPM bigram merges can build it). No piece holds a space except as its first character, so the
   tokens of a text cut at a word boundary are a prefix of the tokens of the whole text: a
   prompt made of a line's first words tokenizes exactly as the training text did.
3. A vocab-only GGUF is written and loaded by llama.cpp (wasi_nn_backend.llm.model.Model), and
   every training text is tokenized by llama.cpp itself.
4. Training sequences: BOS + the whole text + EOS; BOS + the text from each line's start to the
   end + EOS (so that "<s>" + a line's first words continues the line, and the text after it);
   a ChatML conversation asking for the Zen, answered with the whole text + <|im_end|>. The loss
   skips the prompt part of each (a line's first words, the chat prompt): several lines start
   alike ("Although ...", "If the implementation is ...") and only the words after the prompt
   are determined.
5. A llama forward pass in torch that computes what llama.cpp computes for LLM_ARCH_LLAMA:
   RMSNorm (eps 1e-5), RoPE in ggml's "normal" layout (adjacent pairs rotate, which is how GGUF
   llama q/k weights are laid out, so no permutation is needed), grouped KV heads (query head h
   reads KV head h // (n_head / n_head_kv), as ggml's broadcast does), SwiGLU, untied output.
   Trained seeded and deterministic on the CPU until every trained position's argmax is its
   target by a clear margin (llama.cpp's F16 KV cache must not flip a greedy choice).
6. The weights go into models/zen-demo.gguf (F32), and the script checks through the package's
   own API that greedy decoding from each line's first words reproduces the line.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a bare checkout (the package not installed)
    sys.path.insert(0, str(ROOT / "src"))

from wasi_nn_backend.adapters.demo import prompt_words, zen_lines, zen_text  # noqa: E402
from wasi_nn_backend.testing.tiny_model import (  # noqa: E402
    BOS, BYTE_BASE, CHATML, EOS, IM_END, IM_START, UNK, write_llama_metadata,
)

DEFAULT_OUT = ROOT / "models" / "zen-demo.gguf"
SPACE = "\u2581"  # SentencePiece's visible space
SPECIALS = {UNK: "<unk>", BOS: "<s>", EOS: "</s>", IM_START: "<|im_start|>", IM_END: "<|im_end|>"}
CHAT_REQUESTS = ("Recite the Zen of Python.", "What is the Zen of Python?")
IGNORE = -100  # targets the loss skips


def line_prompts(text: str) -> list[tuple[str, str]]:
    """(prompt, line) for every non-empty line of ``text``."""
    lines = zen_lines(text)
    return [(" ".join(line.split(" ")[:prompt_words(lines, line)]), line) for line in lines]


# --- vocabulary and GGUF ---------------------------------------------------------------------

def build_vocab(text: str) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types): specials, bytes, printable ASCII, the text's words."""
    tokens = [SPECIALS[i] for i in range(BYTE_BASE)]
    types = [gguf.TokenType.UNKNOWN if i == UNK else gguf.TokenType.CONTROL
             for i in range(BYTE_BASE)]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    pieces: dict[str, None] = {SPACE: None, "\n": None}
    for char in sorted(set(text) | {chr(c) for c in range(33, 127)}):
        if char not in " \n":
            pieces[char] = None
    pieces["--"] = None
    words = sorted({w for w in "".join(c if c.isalpha() else " " for c in text).split()})
    for word in words:
        for form in (word, SPACE + word):
            for end in range(2, len(form) + 1):
                pieces[form[:end]] = None
    normals = list(pieces)
    tokens += normals
    types += [gguf.TokenType.NORMAL] * len(normals)
    # Longer pieces score higher so merges prefer whole words; specials and bytes never merge.
    scores = [0.0] * BYTE_BASE + [-1000.0] * 256
    scores += [float(len(p)) + (0.5 if p.startswith(SPACE) else 0.0) for p in normals]
    return tokens, scores, [int(t) for t in types]


@dataclass(frozen=True)
class Dims:
    n_vocab: int
    n_embd: int = 128
    n_layer: int = 3
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 384
    n_ctx_train: int = 512
    rope_base: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def write_gguf(path: Path, dims: Dims, vocab: tuple[list[str], list[float], list[int]],
               tensors: dict[str, np.ndarray] | None) -> Path:
    """A llama GGUF with this vocab; ``tensors`` None writes a vocab-only file."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("zen-demo")
    writer.add_description("A tiny llama model trained by tools/train_demo_model.py to recite "
                           "the Zen of Python (PEP 20)")
    write_llama_metadata(writer, vocab, n_embd=dims.n_embd, n_layer=dims.n_layer,
                         n_head=dims.n_head, n_head_kv=dims.n_head_kv, n_ff=dims.n_ff,
                         n_ctx_train=dims.n_ctx_train, head_dim=dims.head_dim,
                         chat_template=CHATML, rope_base=dims.rope_base, eps=dims.eps)
    for name, array in (tensors or {}).items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@contextlib.contextmanager
def llama_vocab(path: Path):
    """llama.cpp's tokenizer for a vocab-only GGUF, as the package's Model."""
    import llama_cpp.llama_cpp as C

    from wasi_nn_backend.llm.lib import ensure_backend
    from wasi_nn_backend.llm.model import Model

    ensure_backend()
    params = C.llama_model_default_params()
    params.vocab_only = True
    handle = C.llama_model_load_from_file(os.fsencode(path), params)
    if not handle:
        raise RuntimeError(f"llama.cpp could not load the vocabulary {path}")
    model = Model(handle, str(path))
    try:
        yield model
    finally:
        model.close()


@dataclass
class Example:
    tokens: list[int]   # BOS + prompt + continuation
    n_prompt: int       # tokens (BOS included) the loss does not predict


def training_examples(vocab_path: Path, text: str) -> list[Example]:
    """Every training sequence, tokenized by llama.cpp."""
    examples = []
    with llama_vocab(vocab_path) as model:
        def tok(piece: str) -> list[int]:
            return model.tokenize(piece, add_special=False, parse_special=False)

        whole = tok(text)
        assert model.detokenize(whole) == text
        examples.append(Example([BOS] + whole + [EOS], 1))
        lines = zen_lines(text)
        start = 0
        for line in text.split("\n"):
            if line and start > 0:
                rest = tok(text[start:])
                prompt = " ".join(line.split(" ")[:prompt_words(lines, line)])
                n_prompt = len(tok(prompt))
                # What the package does with a prompt: BOS + its tokens, a prefix of these.
                assert model.tokenize(prompt, add_special=True, parse_special=True) == \
                    [BOS] + rest[:n_prompt], prompt
                assert whole[-len(rest):] == rest, "a line's tokens differ from the text's"
                examples.append(Example([BOS] + rest + [EOS], 1 + n_prompt))
            start += len(line) + 1
        for request in CHAT_REQUESTS:
            chat = model.render_chat([{"role": "user", "content": request}])
            prompt = model.tokenize(chat, add_special=True, parse_special=True)
            examples.append(Example(prompt + whole + [IM_END], len(prompt)))
    return examples


# --- the model ------------------------------------------------------------------------------

def rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """ggml_rope, mode 0 ("normal", LLAMA): pairs (2i, 2i+1) rotate by pos * base^(-2i/d).
    x: (batch, tokens, heads, head_dim), positions 0..tokens-1."""
    _, n_tokens, _, dim = x.shape
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = torch.arange(n_tokens, dtype=torch.float64)[:, None] * inv[None, :]
    cos = angle.cos().to(x.dtype)[None, :, None, :]
    sin = angle.sin().to(x.dtype)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        d, kv = dims.n_embd, dims.n_head_kv * dims.head_dim
        self.attn_norm = RMSNorm(d, dims.eps)
        self.attn_q = nn.Linear(d, d, bias=False)
        self.attn_k = nn.Linear(d, kv, bias=False)
        self.attn_v = nn.Linear(d, kv, bias=False)
        self.attn_output = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, dims.eps)
        self.ffn_gate = nn.Linear(d, dims.n_ff, bias=False)
        self.ffn_up = nn.Linear(d, dims.n_ff, bias=False)
        self.ffn_down = nn.Linear(dims.n_ff, d, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dims = self.dims
        batch, n_tokens, _ = x.shape
        h = self.attn_norm(x)
        q = rope(self.attn_q(h).view(batch, n_tokens, dims.n_head, dims.head_dim), dims.rope_base)
        k = rope(self.attn_k(h).view(batch, n_tokens, dims.n_head_kv, dims.head_dim),
                 dims.rope_base)
        v = self.attn_v(h).view(batch, n_tokens, dims.n_head_kv, dims.head_dim)
        group = dims.n_head // dims.n_head_kv
        k = k.repeat_interleave(group, dim=2)
        v = v.repeat_interleave(group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dims.head_dim) + mask
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        x = x + self.attn_output(out.reshape(batch, n_tokens, dims.n_embd))
        h = self.ffn_norm(x)
        return x + self.ffn_down(nn.functional.silu(self.ffn_gate(h)) * self.ffn_up(h))


class DemoLlama(nn.Module):
    """llama.cpp's LLM_ARCH_LLAMA forward pass; parameter names map 1:1 to GGUF tensors."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.token_embd = nn.Embedding(dims.n_vocab, dims.n_embd)
        self.blocks = nn.ModuleList(Block(dims) for _ in range(dims.n_layer))
        self.output_norm = RMSNorm(dims.n_embd, dims.eps)
        self.output = nn.Linear(dims.n_embd, dims.n_vocab, bias=False)
        nn.init.normal_(self.token_embd.weight, std=1.0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, n) at positions 0..n-1 -> logits (batch, n, n_vocab)."""
        n_tokens = tokens.shape[1]
        mask = torch.full((n_tokens, n_tokens), float("-inf")).triu(1)
        x = self.token_embd(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.output(self.output_norm(x))

    def gguf_tensors(self) -> dict[str, np.ndarray]:
        """Weights by GGUF name, numpy (out, in) as gguf writes them."""
        out = {}
        for name, param in self.state_dict().items():
            name = name.replace("blocks.", "blk.")
            out[name] = param.detach().to(torch.float32).numpy().copy()
        order = ["token_embd.weight", "output_norm.weight", "output.weight"]
        return {k: out[k] for k in order} | {k: v for k, v in out.items() if k not in order}

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> DemoLlama:
        """The model a GGUF file written by this script holds (for checking llama.cpp)."""
        reader = gguf.GGUFReader(os.fspath(path))

        def field(key: str) -> float:
            return reader.fields[key].contents()

        dims = Dims(n_vocab=len(reader.fields["tokenizer.ggml.tokens"].contents()),
                    n_embd=int(field("llama.embedding_length")),
                    n_layer=int(field("llama.block_count")),
                    n_head=int(field("llama.attention.head_count")),
                    n_head_kv=int(field("llama.attention.head_count_kv")),
                    n_ff=int(field("llama.feed_forward_length")),
                    n_ctx_train=int(field("llama.context_length")),
                    rope_base=float(field("llama.rope.freq_base")),
                    eps=float(field("llama.attention.layer_norm_rms_epsilon")))
        model = cls(dims)
        state = {}
        for tensor in reader.tensors:
            shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
            array = np.asarray(tensor.data, dtype=np.float32).reshape(shape)
            state[tensor.name.replace("blk.", "blocks.")] = torch.from_numpy(array.copy())
        model.load_state_dict(state)
        return model.eval()


# --- training -------------------------------------------------------------------------------

def batch_tensors(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, right-padded; targets IGNORE on padding and prompts."""
    length = max(len(e.tokens) for e in examples) - 1
    inputs = torch.full((len(examples), length), EOS, dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, example in enumerate(examples):
        seq = torch.tensor(example.tokens)
        inputs[row, :len(seq) - 1] = seq[:-1]
        targets[row, example.n_prompt - 1:len(seq) - 1] = seq[example.n_prompt:]
    return inputs, targets


@torch.no_grad()
def check(model: DemoLlama, inputs: torch.Tensor, targets: torch.Tensor
          ) -> tuple[float, int, float]:
    """(loss, wrong argmaxes, smallest margin of the target over the runner-up)."""
    model.eval()
    logits = model(inputs)
    model.train()
    keep = targets != IGNORE
    picked, wanted = logits[keep], targets[keep]
    loss = nn.functional.cross_entropy(picked, wanted).item()
    target_logit = picked.gather(1, wanted[:, None])[:, 0]
    others = picked.scatter(1, wanted[:, None], float("-inf")).max(1).values
    margin = target_logit - others
    return loss, int((margin <= 0).sum()), float(margin.min())


def train(examples: list[Example], dims: Dims, *, seed: int, max_steps: int, lr: float,
          min_margin: float, log_every: int = 50) -> tuple[DemoLlama, dict[str, float]]:
    torch.manual_seed(seed)
    model = DemoLlama(dims)
    inputs, targets = batch_tensors(examples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = 50
    began = time.perf_counter()
    step, loss = 0, float("nan")
    for step in range(1, max_steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        logits = model(inputs)
        loss_t = nn.functional.cross_entropy(logits.reshape(-1, dims.n_vocab),
                                             targets.reshape(-1), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % log_every == 0 or step == max_steps:
            loss, wrong, margin = check(model, inputs, targets)
            print(f"step {step:5d}  loss {loss:.5f}  wrong {wrong:3d}  min margin {margin:7.3f}"
                  f"  {time.perf_counter() - began:6.1f}s", flush=True)
            if wrong == 0 and margin >= min_margin:
                break
    loss, wrong, margin = check(model, inputs, targets)
    stats = {"steps": step, "loss": loss, "wrong": wrong, "min_margin": margin,
             "seconds": time.perf_counter() - began}
    return model.eval(), stats


# --- checking with llama.cpp ----------------------------------------------------------------

def check_with_llama(path: Path, text: str) -> list[str]:
    """Greedy decoding through the package's API: each line from its first words, the whole
    text from its first words, and the chat request. Returns the failures."""
    from wasi_nn_backend import Backend

    failures = []
    config = {"model": {"n_ctx": 512, "n_seq_max": 4}, "logging": {"level": "error"}}
    with Backend(config) as backend:
        graph = backend.load(path)
        with graph.session() as session:
            for prompt, line in line_prompts(text):
                want = line[len(prompt):]
                got = session.complete(prompt, temperature=0, max_tokens=64).text
                ok = (got + "\n").startswith(want + "\n")
                print(f"{'ok ' if ok else 'BAD'} {prompt!r} -> {got.split(chr(10))[0]!r}")
                if not ok:
                    failures.append(f"{prompt!r} gave {got!r}")
            first = line_prompts(text)[0][0]
            got = session.complete(first, temperature=0, max_tokens=400).text
            if first + got != text:
                failures.append(f"whole text from {first!r} gave {got!r}")
        for request in CHAT_REQUESTS:
            with graph.session() as session:
                got = session.chat(request, temperature=0, max_tokens=400).text
                if got != text:
                    failures.append(f"chat {request!r} gave {got!r}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--min-margin", type=float, default=3.0,
                        help="stop when every target beats the runner-up by this many logits")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    began = time.perf_counter()

    text = zen_text()
    vocab = build_vocab(text)
    dims = Dims(n_vocab=len(vocab[0]))
    with tempfile.TemporaryDirectory() as folder:
        vocab_path = write_gguf(Path(folder) / "vocab.gguf", dims, vocab, None)
        examples = training_examples(vocab_path, text)
    n_targets = sum(len(e.tokens) - e.n_prompt for e in examples)
    print(f"vocab {dims.n_vocab}, text {len(examples[0].tokens)} tokens, {len(examples)} "
          f"sequences, {n_targets} trained targets")
    model, stats = train(examples, dims, seed=args.seed, max_steps=args.max_steps, lr=args.lr,
                         min_margin=args.min_margin)
    n_params = sum(p.numel() for p in model.parameters())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_gguf(args.out, dims, vocab, model.gguf_tensors())
    print(f"wrote {args.out}: {args.out.stat().st_size} bytes, {n_params} parameters "
          f"(n_embd {dims.n_embd}, n_layer {dims.n_layer}, n_head {dims.n_head}/"
          f"{dims.n_head_kv} kv, n_ff {dims.n_ff}, n_vocab {dims.n_vocab})")
    print(f"trained {stats['steps']} steps in {stats['seconds']:.1f}s: loss {stats['loss']:.6f},"
          f" {stats['wrong']} wrong, min margin {stats['min_margin']:.3f}")
    failures = check_with_llama(args.out, text)
    print(f"total {time.perf_counter() - began:.1f}s")
    if failures or stats["wrong"]:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("llama.cpp reproduces every line, the whole text and the chat answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
