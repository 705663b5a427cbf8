"""Load settings that would abort the process inside llama.cpp (GGML_ASSERT / GGML_ABORT kill
it: no exception, no error code) must be refused with an error code, or be shown safe here.

Every llama.cpp call that could abort runs in a child process, so a regression fails a test
instead of killing pytest. The combination test loads the tiny models through the public API
with boundary values of every model/context setting we pass to llama.cpp (each alone, and
pairwise through a covering array) and runs several sessions decoding at once (or an embed);
the child prints one line per combination, so the parent names the one that killed it.
The table of checks and the asserts they prevent: src/wasi_nn_backend/config/limits.py.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend.config import limits, parse_config


def _child(script: str, *args: str, stdin: str = "", timeout: float = 120
           ) -> subprocess.CompletedProcess:
    # GGML_NO_BACKTRACE: a dying llama.cpp would otherwise attach gdb to print its stack.
    # OMP_WAIT_POLICY: OpenMP threads that spin while waiting took 1 s instead of 0.05 s per
    # combination on 2 cores shared with other processes.
    env = {**os.environ, "GGML_NO_BACKTRACE": "1", "OMP_WAIT_POLICY": "passive"}
    return subprocess.run([sys.executable, "-c", script, *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, env=env)


def _died(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    asserts = [line for line in lines if "GGML_ASSERT" in line or "GGML_ABORT" in line]
    tail = "\n".join(asserts or lines[-5:])
    return f"the child died (exit status {done.returncode}):\n{tail}"


# --- (a) the regression: n_batch below n_seq_max aborted the process at load -------------

_REGRESSION = r"""
import sys
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend import errors
from wasi_nn_backend.llm.model import Model
from wasi_nn_backend.llm.context import Context

path = sys.argv[1]
code, ctx = nn.init_backend_with_config('{"logging": {"level": "none"}}')
for config in ('{"model": {"n_batch": 1}}', '{"model": {"n_batch": 7}}', '{"batch_size": 2}',
               '{"n-parallel": 9, "batch-size": 8}'):
    code, graph = nn.load_by_name_with_config(ctx, path, None, config)
    print("api", config, code.name, flush=True)
model = Model.load(path)
for kwargs in (dict(n_ctx=64, n_batch=1, n_seq_max=8), dict(n_ctx=4, n_batch=64, n_seq_max=8),
               dict(n_ctx=0, n_batch=512, n_seq_max=8), dict(n_ctx=64, n_batch=8, n_seq_max=8,
               n_threads=100_000)):
    try:
        Context(model, **kwargs).close()
        print("llm", kwargs, "OK", flush=True)
    except errors.WasiNnError as error:
        print("llm", kwargs, error.code.name, flush=True)
nn.deinit_backend(ctx)
"""


def test_n_batch_below_n_seq_max_is_refused_and_the_process_lives(tiny_model_path):
    done = _child(_REGRESSION, tiny_model_path)
    assert done.returncode == 0, _died(done)
    lines = done.stdout.splitlines()
    api = [line for line in lines if line.startswith("api")]
    assert len(api) == 4 and all(line.endswith("INVALID_ARGUMENT") for line in api), lines
    llm = [line for line in lines if line.startswith("llm")]
    assert [line.rsplit(" ", 1)[1] for line in llm] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT",
                                                        "OK", "INVALID_ARGUMENT"], lines


# --- (c) the validation messages -------------------------------------------------------

def _refusal(config, base=None) -> str:
    with pytest.raises(errors.InvalidArgument) as caught:
        parse_config(config, base=base)
    return caught.value.message


def test_the_message_names_the_keys_and_values_as_given():
    message = _refusal({"model": {"n_batch": 1}})
    assert "model.n_batch (1) must be >= model.n_seq_max (8)" in message
    assert "model.n_batch (2, given as batch_size) must be >= model.n_seq_max (8)" \
        in _refusal({"batch_size": 2})
    assert ("model.n_batch (8, given as batch-size) must be >= "
            "model.n_seq_max (9, given as n-parallel)") in _refusal({"n-parallel": 9,
                                                                    "batch-size": 8})
    assert "given as performance.batch_size" in _refusal({"performance": {"batch_size": 4}})
    assert "\n" not in message and "one output row per sequence" in message


def test_the_rule_holds_against_the_base_config():
    base, _ = parse_config({"model": {"n_seq_max": 16, "n_batch": 16}})
    message = _refusal({"model": {"n_batch": 8}}, base)
    assert "model.n_batch (8) must be >= model.n_seq_max (16)" in message
    assert parse_config({"model": {"n_seq_max": 16}})[0].model.n_batch == 512


def test_equal_values_and_embedding_graphs_are_accepted():
    assert parse_config({"model": {"n_batch": 8, "n_seq_max": 8}})[0].model.n_batch == 8
    # An embedding graph decodes at most min(n_ctx, n_ubatch) texts at once (one token each at
    # least): its context gets fewer sequences instead (engine/contexts.py).
    cfg, _ = parse_config({"embedding": True, "model": {"n_batch": 1}})
    assert cfg.model.n_batch == 1 and cfg.model.n_seq_max == 8


def test_thread_counts_stop_at_ggml_max_n_threads():
    assert limits.GGML_MAX_N_THREADS == 512
    parse_config({"model": {"threads": 512, "threads_batch": 512}})
    for key in ("threads", "threads_batch"):
        message = _refusal({"model": {key: 513}})
        assert f"model.{key}" in message and "[1, 512]" in message


def test_the_default_thread_count_stops_at_ggml_max_n_threads(tiny_model_path, monkeypatch):
    """No thread count given: the CPU count, at most what ggml takes (a host with more CPUs
    than that still loads with the default config)."""
    import os

    import llama_cpp.llama_cpp as C

    from wasi_nn_backend import Backend
    monkeypatch.setattr(os, "cpu_count", lambda: limits.GGML_MAX_N_THREADS * 2)
    with Backend({"logging": {"level": "error"}}) as backend:
        graph = backend.load(tiny_model_path, {"model": {"n_ctx": 64, "n_seq_max": 1}})
        assert C.llama_n_threads(graph.engine.context.handle) == limits.GGML_MAX_N_THREADS


def test_n_seq_max_stops_at_llama_max_seq():
    import llama_cpp.llama_cpp as C

    assert limits.LLAMA_MAX_SEQ == int(C.llama_max_parallel_sequences()) == 256
    assert "[1, 256]" in _refusal({"model": {"n_seq_max": 257}})


def test_no_rope_or_yarn_setting_reaches_llama_cpp():
    """WasmEdge's rope-*/yarn-* keys only warn; the context keeps llama.cpp's defaults, which
    read the GGUF's own values."""
    from wasi_nn_backend.llm.context_params import context_params

    cfg, warnings = parse_config({"rope-freq-base": 1e9, "rope-freq-scale": 0.0,
                                  "yarn-ext-factor": -5.0, "rope-scaling-type": "yarn"})
    assert len(warnings) == 4 and not any("rope" in name for name in type(cfg.model).model_fields)
    params = context_params(n_ctx=64, n_batch=8, n_ubatch=None, n_seq_max=8, n_threads=1,
                            n_threads_batch=1, flash_attn="auto", kv_unified=False,
                            type_k="f16", type_v="f16", no_perf=False, embeddings=False,
                            pooling=None)
    assert (params.rope_freq_base, params.rope_freq_scale, params.rope_scaling_type) == (0, 0, -1)
    assert (params.yarn_ext_factor, params.yarn_orig_ctx) == (-1, 0)


def test_the_limits_table_names_an_assert_and_a_place_for_every_check():
    assert len(limits.CHECKS) >= 8
    for check in limits.CHECKS:
        assert check.rule and check.prevents and check.enforced_in, check
        assert "llama" in check.prevents or "ggml" in check.prevents, check


# --- (b) boundary values alone and pairwise ---------------------------------------------

# Boundary values of every model/context setting passed to llama.cpp. "model" picks the GGUF:
# causal (head size 16), causal32 (head size 32: quantized caches fit), encoder (bidirectional
# attention, head size 16, GGUF pooling cls).
FACTORS: dict[str, list] = {
    "n_ctx": [16, 17, 255, 257, 600],
    "n_batch": [1, 2, 7, 8, 9, 64, 4096],
    "n_ubatch": [None, 1, 3, 8, 64],
    "n_seq_max": [1, 2, 8, 9, 256],
    "threads": [1, 2, None],
    "threads_batch": [None, 1, 3],
    "flash_attn": ["auto", "on", "off"],
    "cache_type_k": ["f16", "f32", "q8_0", "q4_0"],
    "cache_type_v": ["f16", "f32", "q8_0", "q4_0"],
    "kv_unified": [False, True],
    "deterministic": [False, True],
    "n_gpu_layers": [0, -1, 100_000],
    "use_mmap": [True, False],
    "embedding": [False, True],
    "pooling": [None, "mean", "cls", "last", "none"],
    "model": ["causal", "causal32", "encoder"],
}
# Each value alone is tried over this base (small, one thread: fast).
BASE = {"n_ctx": 64, "n_batch": 64, "threads": 1, "model": "causal"}
HEAD_SIZE = {"causal": 16, "causal32": 32, "encoder": 16}


def covering_array(factors: dict[str, list]) -> list[dict]:
    """Rows covering every pair of values of two factors (greedy, deterministic)."""
    names = list(factors)

    def pair(a: str, va, b: str, vb) -> tuple:
        if names.index(a) > names.index(b):
            a, va, b, vb = b, vb, a, va
        return (a, json.dumps(va), b, json.dumps(vb))

    uncovered = {pair(a, va, b, vb) for a, b in itertools.combinations(names, 2)
                 for va in factors[a] for vb in factors[b]}
    rows = []
    while uncovered:
        a, va, b, vb = min(uncovered)
        row = {a: json.loads(va), b: json.loads(vb)}
        for name in names:
            if name not in row:
                row[name] = max(factors[name], key=lambda v: sum(
                    pair(m, row[m], name, v) in uncovered for m in row))
        rows.append({name: row[name] for name in names})
        uncovered -= {pair(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}
    return rows


# The most threads allowed (GGML_MAX_N_THREADS), on one decode: each decode starts them all.
EXTRA = [{**BASE, "threads": 512, "threads_batch": 512, "embedding": True}]


def combinations() -> list[dict]:
    alone = [{**BASE, name: value} for name, values in FACTORS.items() for value in values]
    rows = alone + covering_array(FACTORS) + EXTRA
    return [{k: v for k, v in row.items() if v is not None} for row in rows]


def expected(row: dict) -> str:
    """What the documented rules (config/limits.py) say a combination gives."""
    n_batch = row.get("n_batch", 512)
    n_ubatch = row.get("n_ubatch", n_batch)
    n_seq_max = row.get("n_seq_max", 8)
    quantized = [k for k in ("cache_type_k", "cache_type_v") if row.get(k, "f16")[0] == "q"]
    if n_ubatch > n_batch:
        return "INVALID_ARGUMENT"
    if not row.get("embedding") and n_batch < n_seq_max:
        return "INVALID_ARGUMENT"
    if row.get("cache_type_v", "f16")[0] == "q" and row.get("flash_attn") == "off":
        return "INVALID_ARGUMENT"
    if quantized and HEAD_SIZE[row["model"]] % 32:
        return "INVALID_ARGUMENT"
    if row["model"] == "encoder" and not row.get("embedding") and n_ubatch < n_seq_max:
        return "INVALID_ARGUMENT"       # one micro-batch must hold a token of every sequence
    if row.get("embedding") and min(n_ubatch, row.get("n_ctx", 2048)) < 2:
        return "PROMPT_TOO_LONG"        # every text is BOS + one token
    return "OK"


_COMBINATIONS = r"""
import json, sys
from wasi_nn_backend import Backend
from wasi_nn_backend.errors import WasiNnError

paths = json.loads(sys.argv[1])
texts = list("abcdefghijkl")
with Backend({"logging": {"level": "none"}, "backend": {"max_sessions": 64}}) as backend:
    for number, line in enumerate(sys.stdin):
        row = json.loads(line)
        model = {k: v for k, v in row.items() if k not in ("model", "embedding")}
        print("begin", number, flush=True)
        try:
            graph = backend.load(paths[row["model"]],
                                 {"embedding": row.get("embedding", False), "model": model})
            try:
                if row.get("embedding"):
                    with graph.session() as session:
                        assert len(session.embed(texts)) == len(texts)
                else:   # sessions decoding together; one outgrows n_ctx 16 (context shift)
                    sessions = [graph.session() for _ in range(4)]
                    streams = [s.complete_stream("hello" + " the" * i, temperature=0,
                                                 max_tokens=20 if i == 0 else 3)
                               for i, s in enumerate(sessions)]
                    codes = [stream.result().code.name for stream in streams]
                    # the long one: SUCCESS after a context shift, or CONTEXT_FULL where
                    # the KV cannot shift (a quantized K without llama.cpp's rotation)
                    assert codes[0] in ("SUCCESS", "CONTEXT_FULL") and \
                        set(codes[1:]) == {"SUCCESS"}, codes
                    for session in sessions:
                        session.close()
            finally:
                graph.close()
            print("done", number, "OK", flush=True)
        except WasiNnError as error:
            print("done", number, error.code.name, error.message, flush=True)
        except Exception as error:  # a bug, not a refusal: reported, the next row runs
            print("done", number, "BUG", repr(error).replace("\\n", " "), flush=True)
"""


@pytest.fixture(scope="module")
def model_paths(tiny_model_path, tiny_encoder_path, tmp_path_factory):
    head32 = write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-head32.gguf", seed=0,
                              n_head=2, n_head_kv=1)
    return {"causal": tiny_model_path, "causal32": str(head32), "encoder": tiny_encoder_path}


def test_every_combination_loads_and_decodes_or_gets_an_error_code(model_paths):
    rows = combinations()
    done = _child(_COMBINATIONS, json.dumps(model_paths),
                  stdin="".join(json.dumps(row) + "\n" for row in rows), timeout=300)
    finished: dict[int, list[str]] = {}
    began = -1
    for line in done.stdout.splitlines():
        word, number, *rest = line.split(" ", 3)
        if word == "begin":
            began = int(number)
        else:
            finished[int(number)] = rest
    if done.returncode != 0 or len(finished) != len(rows):
        raise AssertionError(f"combination {json.dumps(rows[began])} killed the child: "
                             + _died(done))
    wrong = [(row, finished[i]) for i, row in enumerate(rows) if finished[i][0] != expected(row)]
    assert wrong == [], "\n".join(f"{json.dumps(r)}: expected {expected(r)}, got {' '.join(g)}"
                                  for r, g in wrong)
    outcomes = [finished[i][0] for i in range(len(rows))]
    assert outcomes.count("OK") >= len(rows) // 3, outcomes


# --- checks that need the model (llm/context_params.py, llm/context.py) ------------------

def test_a_quantized_cache_must_tile_every_head(tiny_model):
    """Head size 16 with 32-element blocks: llama.cpp refuses it with flash attention and
    computes wrong logits without; both are invalid_argument here."""
    from wasi_nn_backend.llm.context import Context

    for flash, type_k, type_v in (("off", "q8_0", "f16"), ("auto", "q4_0", "f16"),
                                  ("on", "f16", "q8_0")):
        with pytest.raises(errors.InvalidArgument) as caught:
            Context(tiny_model, n_ctx=64, n_batch=8, flash_attn=flash, type_k=type_k,
                    type_v=type_v)
        name = "type_k" if type_k != "f16" else "type_v"
        assert f"{name} (model.cache_{name})" in caught.value.message
        assert "multiple of 32; this model's is 16" in caught.value.message


def test_a_non_causal_model_decodes_one_micro_batch_at_a_time(tiny_encoder_path):
    from wasi_nn_backend import Backend

    with Backend({"logging": {"level": "none"}}) as backend:
        with pytest.raises(errors.InvalidArgument, match="n_ubatch=4 tokens, fewer than the "
                                                         "n_seq_max=8"):
            backend.load(tiny_encoder_path, {"model": {"n_batch": 64, "n_ubatch": 4}})
        graph = backend.load(tiny_encoder_path,
                             {"model": {"n_batch": 64, "n_ubatch": 8, "threads": 1}})
        assert graph.current.engine.context.n_batch == 8   # the engine packs one micro-batch
        sessions = [graph.session() for _ in range(3)]
        streams = [s.complete_stream("hello the cat sat on the world" * (i + 1),
                                     temperature=0, max_tokens=3)
                   for i, s in enumerate(sessions)]
        assert [stream.result().code.name for stream in streams] == ["SUCCESS"] * 3


_K_SHIFT = r"""
import sys
from wasi_nn_backend import errors
from wasi_nn_backend.llm.batch import Batch
from wasi_nn_backend.llm.context import Context
from wasi_nn_backend.llm.model import Model

model = Model.load(sys.argv[1])
for type_k in ("f16", "q8_0", "q4_0"):
    ctx = Context(model, n_ctx=256, n_batch=16, type_k=type_k, flash_attn="off", n_threads=1)
    batch = Batch(16)
    for position in range(10):
        batch.add(5 + position, position, 0, position == 9)
    assert ctx.decode(batch) == 0
    ctx.seq_rm(0, 1, 5)
    try:
        ctx.seq_add(0, 5, -1, -4)
    except errors.UnsupportedOperation:
        print(type_k, "refused", flush=True)
        continue
    batch.clear()
    batch.add(7, 6, 0, True)
    print(type_k, "shifted", ctx.decode(batch), flush=True)
"""


@pytest.mark.parametrize("n_embd,rot_disable,shifts", [
    (64, None, False),      # head size 32: llama.cpp makes no rotation matrix
    (128, None, True),      # head size 64: it does, and the shift works
    (128, "1", False),      # ... unless LLAMA_ATTN_ROT_DISABLE turns it off
])
def test_a_quantized_k_shifts_only_where_llama_cpp_can(tmp_path_factory, monkeypatch, n_embd,
                                                      rot_disable, shifts):
    """build_rope_shift dereferences a NULL rotation for a quantized K without one: SIGSEGV at
    the decode after llama_memory_seq_add. Context.can_shift() says no there instead."""
    path = write_tiny_llama(tmp_path_factory.mktemp("models") / f"head{n_embd // 2}.gguf",
                            n_embd=n_embd, n_head=2, n_head_kv=1)
    if rot_disable is not None:
        monkeypatch.setenv("LLAMA_ATTN_ROT_DISABLE", rot_disable)
    done = _child(_K_SHIFT, str(path))
    assert done.returncode == 0, _died(done)
    quantized = "shifted 0" if shifts else "refused"
    assert done.stdout.splitlines() == ["f16 shifted 0", f"q8_0 {quantized}",
                                        f"q4_0 {quantized}"]
