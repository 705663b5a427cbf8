"""NnHost shares backend graphs: configs that parse the same (kebab-case or flat, alias or
path) are one graph, and one guest's release never unloads a graph another still holds."""
from __future__ import annotations


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
