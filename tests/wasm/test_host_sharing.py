"""NnHost shares backend graphs by handle: configs that parse the same (kebab-case or flat, alias
or path) are one graph, and one guest's release never unloads a graph another still holds."""
from __future__ import annotations

from wasi_nn_backend.errors import ErrorCode


def test_equal_configs_share_one_graph_and_its_references(nn_host, tiny_model_path):
    code, kebab = nn_host.load_name("default", b'{"ctx-size": 128}')
    assert code is ErrorCode.SUCCESS
    code, flat = nn_host.load_name(tiny_model_path, b'{"ctx_size": 128}')   # by path
    assert code is ErrorCode.SUCCESS
    assert flat is kebab and kebab.refs == 2
    nn_host.release(flat)
    assert any(g.handle == kebab.handle for g in nn_host.backend.graphs)    # still held
    nn_host.release(kebab)                 # the alias's latest graph: kept warm
    assert any(g.handle == kebab.handle for g in nn_host.backend.graphs)
    code, other = nn_host.load_name("default", b'{"ctx-size": 64}')
    assert other is not kebab
    nn_host.release(other)                 # now the alias's warm graph; the first is unloaded
    handles = {g.handle for g in nn_host.backend.graphs}
    assert other.handle in handles and kebab.handle not in handles
