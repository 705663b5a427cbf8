"""llm.gguf_header: the metadata and tensor-data offset of a GGUF file, read without loading it,
checked against the gguf package's reader; damaged headers are invalid_encoding, not a crash."""
from __future__ import annotations

import struct

import gguf
import pytest

from wasi_nn_backend import errors
from wasi_nn_backend.testing.tiny_model import write_not_gguf
from wasi_nn_backend.llm.gguf_header import read_gguf_header


def test_header_matches_the_gguf_package(tiny_model_path):
    header = read_gguf_header(tiny_model_path)
    reference = gguf.GGUFReader(tiny_model_path)
    assert header.version == 3
    assert header.tensor_count == len(reference.tensors)
    assert header.data_offset == reference.data_offset
    assert header.tensor_bytes == sum(int(t.n_bytes) for t in reference.tensors)
    assert header.architecture == "llama"
    assert header.arch_value("block_count") == 2
    assert header.arch_value("embedding_length") == 64
    assert header.arch_value("attention.head_count_kv") == 2
    assert header.metadata["general.name"] == "tiny-llama-seed0"
    assert header.metadata["tokenizer.ggml.add_bos_token"] is True
    assert header.array_lengths["tokenizer.ggml.tokens"] == 1511
    assert "tokenizer.ggml.tokens" not in header.metadata   # strings are walked past


def test_missing_and_not_gguf(tmp_path):
    with pytest.raises(errors.ModelNotFound):
        read_gguf_header(tmp_path / "missing.gguf")
    with pytest.raises(errors.InvalidEncoding):
        read_gguf_header(write_not_gguf(tmp_path / "x.gguf"))


@pytest.mark.parametrize("cut", [4, 20, 100, 1000, 30000])
def test_a_truncated_header_is_invalid_encoding(tmp_path, tiny_model_path, cut):
    data = open(tiny_model_path, "rb").read()
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(errors.InvalidEncoding, match="GGUF header"):
        read_gguf_header(tmp_path / "cut.gguf")


def test_absurd_counts_are_refused_before_any_allocation(tmp_path):
    huge = b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0) + bytes(64)
    (tmp_path / "huge.gguf").write_bytes(huge)
    with pytest.raises(errors.InvalidEncoding, match="tensor count"):
        read_gguf_header(tmp_path / "huge.gguf")
    old = b"GGUF" + struct.pack("<IQQ", 1, 0, 0)
    (tmp_path / "v1.gguf").write_bytes(old)
    with pytest.raises(errors.InvalidEncoding, match="version 1"):
        read_gguf_header(tmp_path / "v1.gguf")
    bad_type = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" \
        + struct.pack("<I", 77) + bytes(16)
    (tmp_path / "type.gguf").write_bytes(bad_type)
    with pytest.raises(errors.InvalidEncoding, match="value type 77"):
        read_gguf_header(tmp_path / "type.gguf")
