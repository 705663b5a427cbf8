"""NnHost shares backend graphs: configs that parse the same (kebab-case or flat, alias or
path) are one graph, and one guest's release never unloads a graph another still holds."""
from __future__ import annotations

import pytest

from wasi_nn_backend.errors import InvalidArgument, NotFound, UnsupportedOperation


def test_equal_configs_share_one_graph_and_its_references(nn_host, tiny_model_path):
    kebab = nn_host.load_name("default", b'{"ctx-size": 128}')
    flat = nn_host.load_name(tiny_model_path, b'{"ctx_size": 128}')   # by path
    assert flat is kebab and kebab.refs == 2
    nn_host.release(flat)
    assert kebab.graph in nn_host.backend.graphs           # still held
    nn_host.release(kebab)                 # the alias's latest graph: kept warm
    assert kebab.graph in nn_host.backend.graphs
    other = nn_host.load_name("default", b'{"ctx-size": 64}')
    assert other is not kebab
    nn_host.release(other)                 # now the alias's warm graph; the first is unloaded
    graphs = nn_host.backend.graphs
    assert other.graph in graphs and kebab.graph not in graphs and kebab.graph.closed


def test_a_refused_config_raises_the_parsers_error():
    from wasi_nn_backend.adapters.wasm import NnHost
    from wasi_nn_backend.errors import InvalidEncoding
    with pytest.raises(InvalidEncoding):
        NnHost(config="{not json")
    with pytest.raises(InvalidArgument, match="max_sessions"):
        NnHost(config={"backend": {"max_sessions": -1}})


def test_load_bytes_checks_encoding_and_target_first(nn_host):
    graphs = nn_host.backend.graphs
    with pytest.raises(UnsupportedOperation):
        nn_host.load_bytes(b"GGUF", None, 1, 0)
    with pytest.raises(InvalidArgument):
        nn_host.load_bytes(b"GGUF", None, 6, 4)
    assert nn_host.backend.graphs == graphs


def test_after_close_a_guest_finds_its_handles_gone(tiny_model_path):
    from wasi_nn_backend.adapters.wasm import NnHost
    host = NnHost(preloads=(f"default:GGML:AUTO:{tiny_model_path}",))
    shared = host.load_name("default", None)
    host.close()
    with pytest.raises(NotFound):
        host.open_session(shared)
    with pytest.raises(NotFound):
        host.load_name("default", None)
