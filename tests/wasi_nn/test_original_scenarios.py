"""The 26 tests of the original C backend (reference/original_backend.md section 7), ported with
their INTENDED outcome: bad input gives an error code and never a crash, limits give
runtime_error, evicted sessions give an error, stop strings cut the output, and the output never
overflows the caller's buffer.

Two deliberate differences, both where the original's docs contradict its tests:
* test 11 expects the third execution context to fail under {"max_concurrent": 2}. Here
  max_concurrent limits requests generating at once (the USER_GUIDE pairs max_sessions 100 with
  max_concurrent 10, which only makes sense that way) and the session limit is max_sessions; the
  test checks both limits.
* test 8(f) expects malformed runtime JSON to be ignored. Silently ignored config is weak point
  3 of the original; here it is invalid_encoding, and the session stays usable.

One file on purpose, over 300 lines: it mirrors the original's scenario files, one test per
original test in the original's order, so the two can be read side by side.
"""
from __future__ import annotations

import json
import threading

import pytest

from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.engine.clock import FakeClock
from wasi_nn_backend.errors import ErrorCode as E
from nn_results import ok  # tests/nn_results.py

MODEL_CONFIG = '{"n_gpu_layers":0,"ctx_size":512,"n_predict":10}'
GREEDY = '{"temperature": 0}'




def init(config=None, **kw):
    return ok(nn.init_backend_with_config(config, **kw))


def load(ctx, path, config=MODEL_CONFIG):
    return ok(nn.load_by_name_with_config(ctx, str(path), None, config))


def infer(ctx, exec_ctx, text, size=4096, runtime=None):
    out = bytearray(size)
    code, n = nn.run_inference(ctx, exec_ctx, 0, text, out, runtime)
    return code, n, out


def reply(result):
    code, n, out = result
    assert code == E.SUCCESS, code
    assert n >= 1 and out[n - 1] == 0  # NUL-terminated, size counts it
    return bytes(out[:n - 1]).decode()


# -- test_basic.c ------------------------------------------------------------------------------
def test_01_basic_backend_init():
    code, ctx = nn.init_backend()
    assert code == E.SUCCESS and ctx is not None
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_02_legacy_flat_config():
    ctx = init('{"max_sessions":25,"idle_timeout_ms":150000,"auto_cleanup":false,'
               '"max_concurrent":2,"queue_size":10}')
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_03_enhanced_nested_config():
    ctx = init(json.dumps({
        "backend": {"max_sessions": 100, "idle_timeout_ms": 300000, "auto_cleanup": True,
                    "max_concurrent": 8, "queue_size": 50},
        "memory_policy": {"context_shifting": True, "cache_strategy": "lru",
                          "max_cache_tokens": 10000},
        "logging": {"level": "info", "enable_debug": False},
        "performance": {"batch_processing": True, "batch_size": 512}}))
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_04_legacy_model_config(tiny_model_path):
    ctx = init()
    load(ctx, tiny_model_path, '{"n_gpu_layers":48,"ctx_size":1024,"n_predict":256,'
         '"batch_size":256,"threads":4,"temp":0.8,"top_p":0.9,"repeat_penalty":1.05}')
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_05_enhanced_model_config(tiny_model_path):
    ctx = init()
    load(ctx, tiny_model_path, json.dumps({
        "model": {"n_gpu_layers": 98, "n_ctx": 2048, "n_predict": 512, "batch_size": 512,
                  "threads": 8},
        "sampling": {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                     "typical_p": 1.0, "repeat_penalty": 1.1, "presence_penalty": 0.0,
                     "frequency_penalty": 0.0, "penalty_last_n": 64, "mirostat": 0,
                     "mirostat_tau": 5.0, "mirostat_eta": 0.1, "seed": -1},
        "stopping": {"stop": ["\n\n", "User:", "Assistant:"], "max_tokens": 512,
                     "max_time_ms": 30000, "ignore_eos": False},
        "memory": {"context_shifting": True, "cache_prompt": True, "max_cache_tokens": 10000}}))
    assert nn.deinit_backend(ctx) == E.SUCCESS


# -- test_inference.c --------------------------------------------------------------------------
def test_06_basic_inference(tiny_model_path):
    ctx = init('{"max_concurrent":4}')
    load(ctx, tiny_model_path, '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":100,'
         '"sampling":{"temperature":0.7,"seed":6}}')  # seeded: the test is deterministic
    exec_ctx = ok(nn.init_execution_context(ctx, 1))
    code, n, _ = infer(ctx, exec_ctx, "What is artificial intelligence?", 1024)
    assert code == E.SUCCESS and n > 0
    assert nn.close_execution_context(ctx, exec_ctx) == E.SUCCESS
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_07_advanced_sampling(tiny_model_path):
    ctx = init()
    graph = load(ctx, tiny_model_path, json.dumps({
        "model": {"n_gpu_layers": 98, "n_ctx": 1024, "n_predict": 80},
        "sampling": {"temperature": 0.9, "top_p": 0.8, "top_k": 30, "min_p": 0.1,
                     "typical_p": 0.95, "repeat_penalty": 1.15, "presence_penalty": 0.1,
                     "frequency_penalty": 0.1, "penalty_last_n": 32, "mirostat": 1,
                     "mirostat_tau": 4.0, "mirostat_eta": 0.2, "seed": 12345},
        "stopping": {"stop": [".", "!", "?"], "max_tokens": 80, "ignore_eos": True}}))
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    code, n, out = infer(ctx, exec_ctx, "Write a short story about", 512)
    if code == E.TOO_LARGE:  # never an overflow: the size needed, nothing written
        assert n > 512 and out == bytearray(512)
    else:
        text = reply((code, n, out))
        assert not any(stop in text for stop in ".!?")
    usage = _usage(ctx, exec_ctx)
    assert usage["output_tokens"] <= 80
    nn.deinit_backend(ctx)


def _usage(ctx, exec_ctx):
    out = bytearray(4096)
    code, n = nn.get_output(ctx, exec_ctx, 1, out)
    assert code == E.SUCCESS
    return json.loads(out[:n])


def test_08_dynamic_runtime_parameters(tiny_model_path):
    ctx = init('{"max_concurrent":4}')
    graph = load(ctx, tiny_model_path, '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":50,'
                 '"sampling":{"temperature":0.7,"top_p":0.9,"seed":8}}')  # seeded
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    story = "Generate a creative story about a robot."
    assert reply(infer(ctx, exec_ctx, story, 512)) is not None                           # (a)
    reply(infer(ctx, exec_ctx, story, 512, '{"temperature":1.2,"top_p":0.95,"max_tokens":40}'))
    reply(infer(ctx, exec_ctx, story, 512, '{"temperature":0.2,"top_p":0.7,"max_tokens":30}'))
    text = reply(infer(ctx, exec_ctx, "List three benefits of AI", 2048,                  # (d)
                       '{"temperature":0.8,"max_tokens":100,"stop":[".","!"]}'))
    assert "." not in text and "!" not in text
    reply(infer(ctx, exec_ctx, story, 512, '{"temperature":0.9,"top_p":0.85,"top_k":50,'
                '"repeat_penalty":1.15,"frequency_penalty":0.1,"presence_penalty":0.1,'
                '"max_tokens":35,"seed":42}'))                                            # (e)
    code, _, out = infer(ctx, exec_ctx, story, 512, '{"temperature":0.8,"invalid_json')  # (f)
    assert code == E.INVALID_ENCODING and out == bytearray(512)
    reply(infer(ctx, exec_ctx, "Hello", 512, '{"temperature":5.0,"top_p":0.01,'         # (g)
                '"max_tokens":10,"repeat_penalty":2.0}'))
    nn.deinit_backend(ctx)


# -- test_session.c ----------------------------------------------------------------------------
def test_09_session_management(tiny_model_path):
    ctx = init('{"max_sessions":10,"idle_timeout_ms":600000,"auto_cleanup":true}')
    graph = load(ctx, tiny_model_path, '{"n_gpu_layers":98,"ctx_size":2048,"n_predict":60}')
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    reply(infer(ctx, exec_ctx, "Hello, my name is Alice.", runtime=GREEDY))
    reply(infer(ctx, exec_ctx, "What is my name?", runtime=GREEDY))
    session = nn.backend_of(ctx).session(exec_ctx)
    assert [m["role"] for m in session.history] == ["user", "assistant"] * 2
    assert "Alice" in session.history[0]["content"]
    nn.deinit_backend(ctx)


def test_10_auto_session_cleanup(tiny_model_path):
    clock = FakeClock()
    ctx = init('{"max_sessions":3,"idle_timeout_ms":100,"auto_cleanup_enabled":true,'
               '"max_concurrent":2}', clock=clock)
    graph = load(ctx, tiny_model_path, '{"n_gpu_layers":0,"ctx_size":512,"n_predict":10}')
    ids = []
    for i in range(1, 4):
        ids.append(ok(nn.init_execution_context_with_session_id(ctx, f"session_{i}", graph)))
        clock.advance(0.010)
    ids.append(ok(nn.init_execution_context_with_session_id(ctx, "session_4", graph)))
    code, _, _ = infer(ctx, ids[0], "Hello")          # session_1 was evicted (LRU)
    assert code == E.NOT_FOUND
    clock.advance(0.150)                              # everyone is idle past 100 ms
    ids.append(ok(nn.init_execution_context_with_session_id(ctx, "session_5", graph)))
    code, _, _ = infer(ctx, ids[1], "Hello")          # session_2 cleaned by idle timeout
    assert code == E.NOT_FOUND
    for exec_ctx in ids:
        nn.close_execution_context(ctx, exec_ctx)     # stale handles: not_found, no crash
    nn.deinit_backend(ctx)

    ctx = init('{"max_sessions":2,"idle_timeout_ms":50,"auto_cleanup_enabled":false}',
               clock=clock)
    graph = load(ctx, tiny_model_path)
    ok(nn.init_execution_context(ctx, graph))
    ok(nn.init_execution_context(ctx, graph))
    clock.advance(0.100)
    code, _ = nn.init_execution_context(ctx, graph)   # limit enforced when cleanup is off
    assert code == E.RUNTIME_ERROR
    nn.deinit_backend(ctx)


def test_11_concurrency_management(tiny_model_path):
    ctx = init('{"max_concurrent":2,"queue_size":5,"max_sessions":2,"auto_cleanup":false}')
    graph = load(ctx, tiny_model_path, '{"n_gpu_layers":98,"ctx_size":1024,"n_predict":50}')
    first = ok(nn.init_execution_context(ctx, graph))
    ok(nn.init_execution_context(ctx, graph))
    code, _ = nn.init_execution_context(ctx, graph)
    assert code == E.RUNTIME_ERROR
    assert nn.close_execution_context(ctx, first) == E.SUCCESS
    ok(nn.init_execution_context(ctx, graph))
    nn.deinit_backend(ctx)
    # max_concurrent: three generations at once on two slots all finish
    ctx = init('{"max_concurrent":2,"queue_size":5}')
    graph = load(ctx, tiny_model_path, '{"ctx_size":256,"n_predict":8}')
    contexts = [ok(nn.init_execution_context(ctx, graph)) for _ in range(3)]
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, infer(ctx, contexts[i], f"Prompt {i}", runtime=GREEDY)[0])) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [E.SUCCESS] * 3
    nn.deinit_backend(ctx)


# -- test_logging.c ----------------------------------------------------------------------------
def test_12_logging_configuration(tmp_path):
    ctx = init(json.dumps({
        "model": {"n_gpu_layers": 0, "n_ctx": 512},
        "logging": {"level": "debug", "enable_debug": True, "timestamps": True,
                    "colors": False, "file": str(tmp_path / "wasi_nn_test.log")},
        "backend": {"max_sessions": 50, "max_concurrent": 4, "queue_size": 20}}))
    assert ctx is not None
    assert nn.deinit_backend(ctx) == E.SUCCESS


@pytest.mark.parametrize("logging_config", [
    {"level": "info", "enable_debug": False, "timestamps": False},
    {"level": "error", "colors": True},
    {"level": "none"}])
def test_13_advanced_logging_features(logging_config):
    ctx = init(json.dumps({"logging": logging_config}))
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_14_file_logging(tmp_path, tiny_model_path):
    log_file = tmp_path / "wasi_nn_test.log"
    ctx = init(json.dumps({"logging": {"level": "debug", "file": str(log_file)},
                           "backend": {"max_sessions": 10, "max_concurrent": 2}}))
    load(ctx, tiny_model_path)
    nn.deinit_backend(ctx)
    lines = log_file.read_text().splitlines()
    assert len(lines) >= 3
    assert any("loaded" in line for line in lines)


# -- test_model.c ------------------------------------------------------------------------------
def _set_compute_get(ctx, exec_ctx, prompt):
    assert nn.set_input(ctx, exec_ctx, 0, nn.Tensor([len(prompt)], nn.TensorType.U8,
                                                     prompt.encode())) == E.SUCCESS
    assert nn.set_input(ctx, exec_ctx, 1, GREEDY) == E.SUCCESS
    assert nn.compute(ctx, exec_ctx) == E.SUCCESS
    out = bytearray(256)
    code, n = nn.get_output(ctx, exec_ctx, 0, out)
    assert code == E.SUCCESS and n > 0
    return bytes(out[:n])


def test_15_safe_model_switch(tiny_model_path, tiny_model_path_b):
    ctx = init(json.dumps({"model": {"n_gpu_layers": 49, "n_ctx": 2048, "n_predict": 512,
                                     "threads": 4},
                           "backend": {"max_sessions": 50, "max_concurrent": 4,
                                       "queue_size": 20},
                           "logging": {"level": "info", "enable_debug": True}}))
    model_config = '{"n_predict": 16}'
    graph_a = load(ctx, tiny_model_path, model_config)
    exec_a = ok(nn.init_execution_context(ctx, graph_a))
    out_a = _set_compute_get(ctx, exec_a, "Hello, what model are you?")
    assert nn.close_execution_context(ctx, exec_a) == E.SUCCESS
    graph_b = load(ctx, tiny_model_path_b, model_config)
    exec_b = ok(nn.init_execution_context(ctx, graph_b))
    out_b = _set_compute_get(ctx, exec_b, "Hello, what model are you?")
    assert out_a != out_b
    graph_a2 = load(ctx, tiny_model_path, model_config)
    exec_a2 = ok(nn.init_execution_context(ctx, graph_a2))
    assert _set_compute_get(ctx, exec_a2, "Hello, what model are you?") == out_a
    nn.deinit_backend(ctx)


# -- test_stopping.c ---------------------------------------------------------------------------
STOPS = ["\n\n", "<|end|>", "</response>", "The end", ".\n"]
STOPPING_CONFIG = json.dumps({
    "model": {"n_gpu_layers": 49, "n_ctx": 4096, "n_predict": 256, "batch_size": 512,
              "threads": 8},
    "sampling": {"temperature": 0.8, "top_p": 0.95, "top_k": 50, "penalty_last_n": 128,
                 "seed": 7},
    "stopping": {"stop_sequences": STOPS, "max_tokens": 200,
                 "grammar_triggers": {"enabled": True},
                 "timeout_config": {"max_inference_time_ms": 30000},
                 "semantic_stopping": {"enabled": False},
                 "token_filters": {"forbidden_tokens": ["<unk>", "<mask>"]}},
    "backend": {"max_sessions": 50, "max_concurrent": 2, "auto_cleanup_sessions": True}})


@pytest.mark.parametrize("prompt,size", [
    ("Explain artificial intelligence in simple terms.", 1024),
    ("Write a sentence that ends with a period and then stop.", 512),
    ("Generate a very long detailed explanation about machine learning algorithms.", 2048),
    ("List three benefits of AI and end with 'END'", 1024),
    ("Tell me a story and end with 'The end'", 512)])
def test_16_to_20_stopping(tiny_model_path, prompt, size):
    ctx = init(STOPPING_CONFIG)
    graph = load(ctx, tiny_model_path, STOPPING_CONFIG)
    exec_ctx = ok(nn.init_execution_context(ctx, graph))
    code, n, out = infer(ctx, exec_ctx, prompt, size)
    if code == E.TOO_LARGE:
        assert n > size and out == bytearray(size)
    else:
        text = reply((code, n, out))
        assert not any(stop in text for stop in STOPS)
        assert "<unk>" not in text
    assert _usage(ctx, exec_ctx)["output_tokens"] <= 200
    nn.deinit_backend(ctx)


# -- test_error.c ------------------------------------------------------------------------------
def test_21_error_handling(tmp_path):
    code, ctx = nn.init_backend_with_config("invalid_json", 12)
    assert code == E.INVALID_ENCODING and ctx is None
    ctx = init(MODEL_CONFIG)
    assert nn.init_backend_with_config(None, 0)[0] == E.SUCCESS
    assert nn.load_by_name(ctx, "nonexistent.gguf")[0] == E.MODEL_NOT_FOUND
    assert nn.load_by_name(None, "nonexistent.gguf")[0] == E.INVALID_ARGUMENT
    assert nn.load_by_name(ctx, None, 0)[0] == E.INVALID_ARGUMENT
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"this is not a model")
    assert nn.load_by_name(ctx, str(not_gguf))[0] == E.INVALID_ENCODING
    assert nn.init_execution_context(None, 1)[0] == E.INVALID_ARGUMENT
    assert nn.init_execution_context(ctx, 999)[0] == E.NOT_FOUND
    assert nn.init_execution_context(ctx, None)[0] == E.INVALID_ARGUMENT
    assert nn.run_inference(None, 1, 0, "x", bytearray(8))[0] == E.INVALID_ARGUMENT
    assert nn.run_inference(ctx, 999, 0, "x", bytearray(8))[0] == E.NOT_FOUND
    assert nn.run_inference(ctx, 999, 0, None, bytearray(8))[0] != E.SUCCESS
    assert nn.run_inference(ctx, 999, 0, "x", None)[0] != E.SUCCESS
    assert nn.close_execution_context(None, 1) == E.INVALID_ARGUMENT
    assert nn.close_execution_context(ctx, 999) == E.NOT_FOUND
    assert nn.deinit_backend(None) == E.INVALID_ARGUMENT
    assert nn.set_input(ctx, 999, 0, "x") == E.NOT_FOUND
    assert nn.compute(ctx, 999) == E.NOT_FOUND
    assert nn.get_output(ctx, 999, 0, bytearray(8))[0] == E.NOT_FOUND
    assert nn.load(ctx, [b"x"], 0, 0)[0] == E.UNSUPPORTED_OPERATION
    assert nn.deinit_backend(ctx) == E.SUCCESS


PHASE42 = json.dumps({
    "model": {"n_gpu_layers": 49, "n_ctx": 2048, "n_predict": 128, "batch_size": 512,
              "threads": 8},
    "sampling": {"temperature": 0.7, "top_p": 0.95, "top_k": 40},
    "backend": {"max_sessions": 100, "max_concurrent": 2, "queue_size": 5,
                "default_task_timeout_ms": 30000, "priority_scheduling_enabled": True,
                "fair_scheduling_enabled": True, "queue_warning_threshold": 4,
                "queue_reject_threshold": 5}})


def test_22_phase42_backend_init():
    ctx = init(PHASE42)
    assert ctx is not None and nn.deinit_backend(ctx) == E.SUCCESS


def test_23_task_queue_interface():
    ctx = init(PHASE42)
    assert nn.load_by_name_with_config(ctx, "dummy_model.gguf", None, PHASE42)[0] \
        == E.MODEL_NOT_FOUND
    code, _ = nn.init_execution_context_with_session_id(ctx, "s1")
    assert code == E.INVALID_ARGUMENT  # no model is loaded
    assert nn.deinit_backend(ctx) == E.SUCCESS


@pytest.mark.parametrize("with_model", [False, True])
def test_24_phase42_concurrent_access(tiny_model_path, with_model):
    ctx = init(PHASE42)
    graph = load(ctx, tiny_model_path, PHASE42) if with_model else 1
    codes = []
    lock = threading.Lock()

    def worker():
        for _ in range(2):
            code, exec_ctx = nn.init_execution_context(ctx, graph)
            if code == E.SUCCESS:
                assert nn.close_execution_context(ctx, exec_ctx) == E.SUCCESS
            with lock:
                codes.append(code)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    expected = E.SUCCESS if with_model else E.NOT_FOUND
    assert codes == [expected] * 8
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_25_advanced_task_queue_config():
    ctx = init(json.dumps({
        "backend": {"max_concurrent": 4, "queue_size": 10, "default_task_timeout_ms": 60000,
                    "priority_scheduling_enabled": True, "fair_scheduling_enabled": False,
                    "queue_warning_threshold": 8, "queue_reject_threshold": 10},
        "model": {"n_gpu_layers": 98, "n_ctx": 4096, "threads": 16}}))
    assert nn.deinit_backend(ctx) == E.SUCCESS


def test_26_dangerous_edge_cases():
    assert nn.init_backend_with_config("x" * (1 << 20))[0] == E.INVALID_ENCODING
    nested = "1"
    for depth in range(10):
        nested = '{"level%d": %s}' % (depth, nested)
    assert nn.init_backend_with_config(nested)[0] == E.SUCCESS  # unknown keys: warnings
    unicode = '{"model":{"path":"模型.gguf","name":"🦙","description":"ünïcödé"}}'
    assert nn.init_backend_with_config(unicode)[0] == E.SUCCESS
    assert nn.init_backend_with_config("", 0)[0] == E.SUCCESS
    assert nn.init_backend_with_config("        ", 8)[0] == E.SUCCESS
    ctx = init(MODEL_CONFIG)
    assert nn.deinit_backend(ctx) == E.SUCCESS
    assert nn.deinit_backend(ctx) == E.NOT_FOUND  # a double deinit is an error, not a crash
