"""core/embedding.py: packing texts into decodes, and llama.cpp's normalizations."""
from __future__ import annotations

import numpy as np
import pytest

from wasi_nn_backend.core.embedding import normalize, pack


@pytest.mark.parametrize("lengths, max_tokens, max_texts, expected", [
    ([3, 3, 3], 10, 8, [[0, 1, 2]]),
    ([3, 3, 3], 6, 8, [[0, 1], [2]]),
    ([3, 3, 3], 100, 2, [[0, 1], [2]]),
    ([10, 1, 10], 10, 8, [[0], [1], [2]]),
    ([4, 7, 3, 3], 10, 8, [[0], [1, 2], [3]]),   # in order: never reordered to fill gaps
    ([], 10, 8, []),
])
def test_pack_keeps_order_and_limits(lengths, max_tokens, max_texts, expected):
    assert pack(lengths, max_tokens=max_tokens, max_texts=max_texts) == expected


@pytest.mark.parametrize("lengths", [[0], [11], [3, -1]])
def test_pack_refuses_texts_that_fit_no_decode(lengths):
    with pytest.raises(ValueError):
        pack(lengths, max_tokens=10, max_texts=8)


VECTOR = np.array([3.0, -4.0, 0.0, 12.0], dtype=np.float32)


@pytest.mark.parametrize("mode, expected", [
    (-1, VECTOR),
    (0, VECTOR * (32760.0 / 12.0)),
    (1, VECTOR / 19.0),
    (2, VECTOR / 13.0),
    (3, VECTOR / np.cbrt(27 + 64 + 1728)),
])
def test_normalize_matches_llama_cpp(mode, expected):
    got = normalize(VECTOR, mode)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_normalize_works_per_row_and_keeps_zero_vectors_zero():
    rows = np.stack([VECTOR, np.zeros(4, np.float32)])
    got = normalize(rows, 2)
    np.testing.assert_allclose(got[0], VECTOR / 13.0, rtol=1e-6)
    assert not got[1].any()
    assert np.isfinite(normalize(np.full(4, 1e30, np.float32), 100)).all()
