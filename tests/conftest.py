"""Shared fixtures: tiny GGUF models generated once per test session (no downloads)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# The package from src/ when it is not installed (the Makefile installs it editable; a bare
# checkout still runs).
if importlib.util.find_spec("wasi_nn_backend") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wasi_nn_backend.testing.tiny_model import write_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random llama GGUF (seed 0, ChatML template), written once per session."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-seed0.gguf", seed=0))


@pytest.fixture(scope="session")
def tiny_model_path_b(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second tiny model (seed 1): same vocabulary, different weights (model switching)."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-seed1.gguf", seed=1))


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The seed-0 model made to look like an embedding model: bidirectional attention and the
    GGUF naming cls pooling (llama.cpp's BERT-like path, without a BERT file)."""
    return str(write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-encoder.gguf", seed=0,
                                causal=False, pooling_type=2))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: str):
    """The llm-layer Model for tiny_model_path, loaded once. Do not close it in a test."""
    from wasi_nn_backend.llm.model import Model

    model = Model.load(tiny_model_path)
    yield model
    model.close()
