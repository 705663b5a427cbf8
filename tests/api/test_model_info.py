"""Model info: architecture, parameter count, context trained, vocabulary size, chat template,
quantization, file size, load time and memory, from Graph.info(), the usage JSON (function API,
and so the wasm host) and the CLI's info command."""
from __future__ import annotations

import json
import os

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.adapters import cli
from wasi_nn_backend.testing.tiny_model import write_tiny_llama
from wasi_nn_backend.errors import ErrorCode as E

SMALL = {"model": {"n_ctx": 256, "n_seq_max": 2}, "logging": {"level": "error"}}


@pytest.fixture(scope="module")
def q8_model_path(tmp_path_factory):
    return str(write_tiny_llama(tmp_path_factory.mktemp("q8") / "tiny-q8.gguf", quant="q8_0"))


def test_graph_info(tiny_model_path):
    with Backend(SMALL) as backend:
        graph = backend.load(tiny_model_path, SMALL)
        info = graph.info()
        model = graph.model
        assert info["handle"] == graph.handle and info["path"] == tiny_model_path
        assert info["name"] == "tiny-llama-seed0" and info["architecture"] == "llama"
        assert info["n_params"] == model.n_params > 0
        assert (info["n_layer"], info["n_embd"], info["n_vocab"]) == (2, 64, 1511)
        assert info["n_ctx_train"] == 4096
        assert (info["n_ctx"], info["n_seq_max"]) == (256, 2)
        assert info["quantization"] == "F32"
        assert info["file_size"] == os.path.getsize(tiny_model_path)
        assert info["size_bytes"] == model.size_bytes
        assert info["chat_template"].startswith("{% for message in messages %}")
        assert 0 < info["load_seconds"] < 60
        memory = info["memory"]
        assert memory["total_mb"] == pytest.approx(
            memory["weights_mb"] + memory["kv_cache_mb"] + memory["compute_mb"], abs=0.02)
        assert info["old_models_serving"] == 0
        json.dumps(info)   # plain data


def test_quantization_and_a_model_without_template(q8_model_path, tmp_path):
    bare = str(write_tiny_llama(tmp_path / "bare.gguf", chat_template=None))
    with Backend(SMALL) as backend:
        assert backend.load(q8_model_path, SMALL).info()["quantization"] == "Q8_0"
        assert backend.load(bare, SMALL).info()["chat_template"] is None


def test_info_follows_a_swap(tiny_model_path, tiny_model_path_b):
    with Backend(SMALL) as backend:
        graph = backend.load(tiny_model_path, SMALL)
        graph.replace_model(tiny_model_path_b, {"model": {"n_ctx": 128, "n_seq_max": 1}})
        info = graph.info()
        assert info["path"] == tiny_model_path_b and info["name"] == "tiny-llama-seed1"
        assert (info["n_ctx"], info["n_seq_max"]) == (128, 1)


def test_usage_json_names_the_model_of_the_context(tiny_model_path, tiny_model_path_b):
    code, ctx = nn.init_backend_with_config('{"logging": {"level": "error"}}')
    _, graph = nn.load_by_name_with_config(ctx, tiny_model_path, None, '{"ctx_size": 256}')
    _, before = nn.init_execution_context(ctx, graph)
    nn.backend_of(ctx).graph(graph).replace_model(tiny_model_path_b, '{"ctx_size": 256}')
    _, after = nn.init_execution_context(ctx, graph)
    usages = {}
    for exec_ctx in (before, after):
        prompt = b"Hello"
        nn.set_input(ctx, exec_ctx, 0, nn.Tensor([len(prompt)], nn.TensorType.U8, prompt))
        nn.set_input(ctx, exec_ctx, 1, b'{"temperature": 0, "max_tokens": 4}')
        assert nn.compute(ctx, exec_ctx) == E.SUCCESS
        out = bytearray(4096)
        code, size = nn.get_output(ctx, exec_ctx, 1, out)
        assert code == E.SUCCESS
        usages[exec_ctx] = json.loads(out[:size])
    assert usages[before]["model"]["path"] == tiny_model_path
    assert usages[after]["model"]["path"] == tiny_model_path_b
    model = usages[after]["model"]
    assert model["name"] == "tiny-llama-seed1" and model["architecture"] == "llama"
    assert model["n_vocab"] == 1511 and model["n_ctx_train"] == 4096 and model["n_ctx"] == 256
    assert model["quantization"] == "F32" and model["n_params"] > 0
    assert model["file_size"] == os.path.getsize(tiny_model_path_b) and model["load_seconds"] > 0
    assert "chat_template" not in model                  # kept out of every usage report
    assert usages[after]["llama_build_number"] is not None   # WasmEdge's keys stay
    nn.deinit_backend(ctx)


def test_cli_info(tiny_model_path, capsys):
    assert cli.main(["info", tiny_model_path]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["architecture"] == "llama" and lines["quantization"] == "F32"
    assert lines["n_vocab"] == "1511" and lines["n_ctx_train"] == "4096"
    assert lines["file_size"] == str(os.path.getsize(tiny_model_path))
    assert float(lines["load_seconds"]) > 0
    assert lines["memory_mb"].split()[1] == "(weights" and "KV cache" in lines["memory_mb"]
    assert lines["chat_template"].startswith("{% for message in messages %}")
    small = float(lines["memory_mb"].split()[0])
    assert cli.main(["info", tiny_model_path, "--config",
                     '{"n_ctx": 2048, "n_seq_max": 4}']) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert float(lines["memory_mb"].split()[0]) > small and lines["n_seq_max"] == "4"
