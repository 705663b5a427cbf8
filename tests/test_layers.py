"""DESIGN.md's import direction: adapters -> wasi_nn/backend -> engine -> {core, llm}; errors
and config anywhere; only llm/ imports llama_cpp; core and llm never import each other; nothing
imports adapters."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wasi_nn_backend"

# layer of each top-level module/package -> layers it may import
LAYER_OF = {
    "errors": "base", "config": "base", "logs": "base",
    "core": "core", "llm": "llm", "engine": "engine",
    "backend": "api", "session": "api", "chat": "api", "io_context": "api", "wasi_nn": "api", "wasi_nn_args": "api", "stats": "api",
    "graph": "api", "loaded": "api", "loading": "api", "budget": "api", "janitor": "api",
    "adapters": "adapters", "__init__": "root",
}
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "llm": {"base", "llm"},
    "engine": {"base", "core", "llm", "engine"},
    "api": {"base", "core", "engine", "api"},
    "adapters": {"base", "core", "engine", "api", "adapters"},
    "root": {"base", "core", "engine", "api"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _imports(path: Path, parts: tuple[str, ...]):
    """Absolute names (relative to the package) that ``path`` imports, plus external roots."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(parts[:-1])
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for n in ast.walk(node)}  # annotations only: not a runtime dependency
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield "external", alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
                if name.startswith("wasi_nn_backend"):
                    rest = name.split(".")[1:]
                    yield "internal", rest[0] if rest else "__init__"
                else:
                    yield "external", name
            else:
                base = package_parts[:len(package_parts) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    yield "internal", target[0]
                else:  # "from . import x" at the top level
                    for alias in node.names:
                        yield "internal", alias.name


def test_only_llm_imports_llama_cpp():
    offenders = [str(path) for path, parts in _modules() if parts[0] != "llm"
                 for kind, name in _imports(path, parts)
                 if kind == "external" and name.split(".")[0] == "llama_cpp"]
    assert offenders == []


def test_imports_point_one_way():
    violations = []
    for path, parts in _modules():
        layer = LAYER_OF[parts[0]]
        for kind, name in _imports(path, parts):
            if kind != "internal":
                continue
            target = LAYER_OF.get(name)
            assert target is not None, f"{path}: unknown module {name}: add it to LAYER_OF"
            if target not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(PACKAGE)} ({layer}) imports {name} ({target})")
    assert violations == []


def test_every_module_has_a_layer():
    for path, parts in _modules():
        assert parts[0] in LAYER_OF, f"{path} is in no layer"
