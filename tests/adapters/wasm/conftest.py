"""Shared fixtures for the wasm host tests: an NnHost on the tiny model, what the Python API
gives for a prompt, and the WAT harness (wat_harness.py) as the ``wat`` fixture.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from wat_harness import GENERATED_TOKENS, HOST_CONFIG, PROMPT, WatKit

from wasi_nn_backend.adapters.wasm import NnHost
from wasi_nn_backend.api.backend import Backend


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nn_host(tiny_model_path: str):
    """An NnHost with the tiny model preloaded as "default" and its folder allowed."""
    with NnHost(config=HOST_CONFIG, preloads=(f"default:GGML:AUTO:{tiny_model_path}",),
                allowed_dirs=(str(Path(tiny_model_path).parent),)) as host:
        yield host


@pytest.fixture(scope="session")
def expected_text(tiny_model_path: str) -> bytes:
    """What the Python API generates for PROMPT with the WAT tests' settings."""
    with Backend(HOST_CONFIG) as backend, backend.load(tiny_model_path).session() as session:
        completion = session.complete(PROMPT.decode(), temperature=0, max_tokens=8,
                                      ignore_eos=True)
    assert len(completion.generated_tokens) == GENERATED_TOKENS
    return completion.text.encode()


@pytest.fixture(scope="session")
def wat() -> type[WatKit]:
    return WatKit
