"""The wheel carries what an installed package needs: the demo model, the Erlang client and its
protocol document, py.typed, the LICENSE, the SPDX licence, extras and a dependency range.

Builds a wheel of a copy of the source tree (pip, no build isolation, no network) and reads its
listing and METADATA; nothing is installed.
"""
from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = "wasi_nn_backend/data/"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[zipfile.ZipFile, str]:
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "erlang", "docs", "models"):   # links inside src/ point to these
        shutil.copytree(ROOT / name, tree / name, symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                           "--no-build-isolation", "-v", "-w", str(out)], cwd=tree,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = out.glob("wasi_nn_backend-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive, done.stdout + done.stderr


def test_the_wheel_carries_the_demo_model_and_the_erlang_client(wheel):
    archive, _ = wheel
    names = set(archive.namelist())
    model = archive.getinfo(DATA + "zen-demo.gguf")
    assert model.file_size == (ROOT / "models" / "zen-demo.gguf").stat().st_size > 3_000_000
    from wasi_nn_backend.adapters.bundled import ERLANG_FILES
    for name in ERLANG_FILES:   # the rebar3 project, its README and the protocol
        assert DATA + "erlang/" + name in names, name
    for name in ("src/wasi_nn.erl", "src/dev_wasi_nn_nif.erl", "rebar.config"):
        assert archive.read(DATA + "erlang/" + name) == (ROOT / "erlang" / name).read_bytes()
    assert "wasi_nn_backend/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_metadata_licence_extras_and_ranges(wheel):
    archive, log = wheel
    (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(archive.read(meta_name))
    assert meta["License-Expression"] == "MIT" and meta["License"] is None
    assert {"wasm", "erlang", "all", "test"} <= set(meta.get_all("Provides-Extra"))
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert not [r for r in core if "==" in r], core            # ranges, not pins
    assert any(r.startswith("llama-cpp-python") and "<0.4" in r for r in core)
    assert not [r for r in core if r.startswith(("wasmtime", "erlang"))]
    assert any(r.startswith("wasmtime") and 'extra == "wasm"' in r for r in requires)
    assert any(r.startswith("erlang") and 'extra == "erlang"' in r for r in requires)
    assert meta.get_all("Classifier")
    assert "DeprecationWarning" not in log and "project.license" not in log, log[-3000:]
