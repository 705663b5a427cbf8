"""memory.max_model_memory_mb: before a load, its estimated footprint (weights + KV cache +
compute) plus what loaded models hold must fit, or the load is too_large with the numbers,
and nothing is loaded. Unloading gives the memory back."""
from __future__ import annotations

import logging
import math

import pytest

from wasi_nn_backend import Backend
from wasi_nn_backend import wasi_nn as nn
from wasi_nn_backend.config import ModelSettings
from wasi_nn_backend.engine.footprint import estimate_footprint
from wasi_nn_backend.errors import ErrorCode as E
from wasi_nn_backend.errors import InvalidArgument, TooLarge
from wasi_nn_backend.llm.gguf_header import read_gguf_header

MODEL = {"n_ctx": 512, "n_seq_max": 2}


def footprint_mb(path: str, **settings) -> float:
    estimate = estimate_footprint(read_gguf_header(path), ModelSettings(**{**MODEL, **settings}))
    return estimate.total_bytes / (1024 * 1024)


def config(limit_mb: int) -> dict:
    return {"memory": {"max_model_memory_mb": limit_mb}, "model": MODEL,
            "logging": {"level": "error"}}


def test_a_limit_that_refuses_names_the_numbers(tiny_model_path):
    needed = footprint_mb(tiny_model_path)
    limit = math.floor(needed) - 1
    with Backend(config(limit)) as backend:
        with pytest.raises(TooLarge) as caught:
            backend.load(tiny_model_path)
        message = caught.value.message
        assert f"needs about {round(needed, 2)} MB" in message
        assert f"{float(limit)} MB limit (memory.max_model_memory_mb)" in message
        assert caught.value.needed == round(needed * 1024 * 1024)
        assert backend.graphs == [] and backend.model_memory_bytes == 0


def test_a_limit_that_allows(tiny_model_path):
    with Backend(config(math.ceil(footprint_mb(tiny_model_path)) + 1)) as backend:
        graph = backend.load(tiny_model_path)
        assert graph.session().complete("Hi", temperature=0, max_tokens=2).text
        assert backend.model_memory_bytes == graph.current.footprint.total_bytes
        assert backend.stats().model_memory_bytes == backend.model_memory_bytes


def test_loaded_graphs_count_and_unload_gives_back(tiny_model_path, tiny_model_path_b):
    a, b = footprint_mb(tiny_model_path), footprint_mb(tiny_model_path_b)
    with Backend(config(math.ceil(a + b / 2))) as backend:
        first = backend.load(tiny_model_path)
        with pytest.raises(TooLarge, match="held by 1 loaded model"):
            backend.load(tiny_model_path_b)
        assert backend.graphs == [first]
        first.close()
        assert backend.model_memory_bytes == 0
        assert backend.load(tiny_model_path_b).path == tiny_model_path_b


def test_the_kv_cache_counts(tiny_model_path):
    # the same file: a bigger context is refused where a small one fits
    limit = math.ceil(footprint_mb(tiny_model_path)) + 1
    assert footprint_mb(tiny_model_path, n_ctx=8192, n_seq_max=8) > limit
    with Backend(config(limit)) as backend:
        with pytest.raises(TooLarge, match="KV cache"):
            backend.load(tiny_model_path, {"model": {"n_ctx": 8192, "n_seq_max": 8}})
        backend.load(tiny_model_path)


def test_a_load_config_cannot_raise_the_limit(tiny_model_path, caplog):
    with Backend(config(1)) as backend:
        with caplog.at_level(logging.WARNING, logger="wasi_nn_backend"):
            with pytest.raises(TooLarge):
                backend.load(tiny_model_path, {"memory": {"max_model_memory_mb": 100000}})
        assert any("cannot change it" in r.getMessage() for r in caplog.records)


def test_no_limit_by_default(tiny_model_path):
    with Backend({"logging": {"level": "error"}}) as backend:
        assert backend.config.memory.max_model_memory_mb == 0
        backend.load(tiny_model_path, {"model": {"n_ctx": 8192, "n_seq_max": 8}})


def test_function_api_too_large(tiny_model_path):
    code, ctx = nn.init_backend_with_config('{"memory": {"max_model_memory_mb": 1}}')
    code, needed = nn.load_by_name(ctx, tiny_model_path)
    assert code == E.TOO_LARGE and needed > 1024 * 1024
    assert nn.backend_of(ctx).graphs == []
    nn.deinit_backend(ctx)
    code, ctx = nn.init_backend_with_config('{"memory": {"max_model_memory_mb": 64}}')
    assert nn.load_by_name(ctx, tiny_model_path)[0] == E.SUCCESS
    nn.deinit_backend(ctx)


def test_the_limit_is_validated():
    assert nn.init_backend_with_config('{"memory": {"max_model_memory_mb": -1}}')[0] \
        == E.INVALID_ARGUMENT
    assert nn.init_backend_with_config('{"memory": {"max_model_memory_mb": "1G"}}')[0] \
        == E.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument, match="max_model_memory_mb"):
        Backend({"memory": {"max_model_memory_mb": -1}})


def test_a_header_claiming_absurd_layers_is_refused_before_any_work(tmp_path):
    import gguf
    from wasi_nn_backend.errors import InvalidEncoding
    path = tmp_path / "huge-layers.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1_000_000_000)  # sizing per-layer lists by this would hang
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with Backend({"logging": {"level": "error"}}) as backend:
        with pytest.raises(InvalidEncoding, match="1000000000 layers"):
            backend.load(path)


def test_an_embedding_graph_counts_only_its_one_decode_of_kv(tiny_model_path):
    header = read_gguf_header(tiny_model_path)
    settings = {"n_ctx": 1024, "n_seq_max": 8, "n_batch": 256}
    generating = estimate_footprint(header, ModelSettings(**settings))
    embedding = estimate_footprint(header, ModelSettings(**settings, embedding=True))
    assert embedding.kv_cache_bytes * 32 == generating.kv_cache_bytes  # 256 cells, not 8192


def test_without_a_limit_kv_beyond_physical_memory_is_refused(tiny_model_path, monkeypatch):
    from wasi_nn_backend.api import budget
    header = read_gguf_header(tiny_model_path)
    configs = [{"n_ctx": 256, "n_seq_max": 1, "n_batch": n} for n in (512, 256, 128)]
    written = [estimate_footprint(header, ModelSettings(**c)) for c in configs]
    written = [f.kv_cache_bytes + f.compute_bytes for f in written]
    ram = written[0] + written[1] + written[2] // 2  # room for two of them, not three
    monkeypatch.setattr(budget, "physical_memory_bytes", lambda: ram)
    with Backend({"logging": {"level": "error"}}) as backend:
        backend.load(tiny_model_path, {"model": configs[0]})
        backend.load(tiny_model_path, {"model": configs[1]})
        with pytest.raises(TooLarge, match="physical memory"):
            backend.load(tiny_model_path, {"model": configs[2]})
    with Backend({"logging": {"level": "error"}}) as backend:  # nor one too big alone
        with pytest.raises(TooLarge, match="physical memory"):
            backend.load(tiny_model_path, {"model": {"n_ctx": 8192, "n_seq_max": 8}})
