"""The embedding settings (embedding, pooling, normalize) in every spelling, bad values named,
and embedding a load-time setting only."""
from __future__ import annotations

import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.config import Config, parse_config, parse_overrides, request_params


@pytest.mark.parametrize("doc, expected", [
    ({"model": {"embedding": True, "pooling": "LAST", "normalize": False}}, (True, "last", -1)),
    ({"embeddings": True, "pooling_type": 0, "embd_normalize": 1}, (True, "none", 1)),
    ({"model": {"normalize": True, "pooling": None}}, (False, None, 2)),
    ({"pooling-type": 1, "model": {"pooling": "cls"}}, (False, "cls", 2)),
])
def test_embedding_settings(doc, expected):
    cfg, _ = parse_config(doc)
    assert (cfg.model.embedding, cfg.model.pooling, cfg.model.normalize) == expected


@pytest.mark.parametrize("doc, words", [
    ({"pooling-type": 4}, "rank pooling"),
    ({"model": {"pooling": "max"}}, '"mean", "cls", "last", "none"'),
    ({"pooling-type": 9}, "out of range"),
    ({"embd-normalize": 1.5}, "an integer in [-1, 100]"),
    ({"embedding": 1}, "true or false"),
])
def test_bad_embedding_settings_are_named(doc, words):
    with pytest.raises(errors.InvalidArgument) as caught:
        parse_config(doc)
    assert words in caught.value.message


def test_embedding_is_a_load_time_setting():
    _, warnings = parse_overrides({"embedding": True}, base=request_params(Config()))
    assert warnings == ["embedding: a load-time setting; it has no effect on a single request; "
                        "ignored"]
