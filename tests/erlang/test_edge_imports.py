"""The Erlang edge reaches the engine only through the Python API (issue 15): adapters/erlang
imports from ``api`` (the package and its modules), errors, config, logs and itself; never the
function API (wasi_nn, another edge with its own wire format), core, engine, llm or wasm."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "wasi_nn_backend"
EDGE = PACKAGE / "adapters" / "erlang"
ALLOWED = {"api", "errors", "config", "logs", "adapters.erlang"}


def _internal_imports(path: Path) -> list[str]:
    """The package-relative names a module imports (``from ...api import x`` -> api.x)."""
    here = list(path.relative_to(PACKAGE).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name.split(".", 1)[1] for a in node.names
                      if a.name.startswith("wasi_nn_backend.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("wasi_nn_backend"):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = here[:len(here) - (node.level - 1)] + (node.module or "").split(".")
            names += [".".join([p for p in base if p] + [a.name]) for a in node.names]
    return names


def _allowed(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in ALLOWED)


def test_the_erlang_edge_imports_only_the_api_and_the_base():
    wrong = {f"{path.name}: {name}" for path in sorted(EDGE.glob("*.py"))
             for name in _internal_imports(path) if not _allowed(name)}
    assert not wrong, sorted(wrong)


def test_the_check_sees_a_forbidden_import():
    path = EDGE / "ops.py"
    names = _internal_imports(path)
    assert "api.registry" in names and "errors.WasiNnError" in names
    assert not _allowed("wasi_nn.backend_of") and not _allowed("engine.streams.Stream")
    assert not _allowed("adapters.wasm.x") and not _allowed("apis")
