"""docs/DESIGN.md's layers, checked on the source (imports for annotations only count too):

    edges (wasi_nn, adapters/*) -> api -> engine -> {core, llm};  errors, config, logs anywhere

Only llm/ imports llama_cpp; core and llm never import each other; nothing imports an edge but
the root's re-exports; core has no threads; and no two modules anywhere import each other,
however long the way round (no import cycles)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wasi_nn_backend"

# layer of each top-level module/package -> layers it may import
LAYER_OF = {
    "errors": "base", "config": "base", "logs": "base",
    "core": "core", "llm": "llm", "engine": "engine", "api": "api",
    "wasi_nn": "edge", "adapters": "edge",
    "testing": "testing", "__init__": "root",
}
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "llm": {"base", "llm"},
    "engine": {"base", "core", "llm", "engine"},
    "api": {"base", "core", "llm", "engine", "api"},
    "edge": {"base", "api", "edge"},   # the engine only through the API
    "testing": {"base", "llm", "engine"},
    "root": {"base", "core", "engine", "api"},
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _module_name(parts: tuple[str, ...]) -> str:
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def _imports(path: Path, parts: tuple[str, ...]):
    """(kind, dotted name): internal names relative to the package (the module, or the
    package it comes from), external names as written."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = list(parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("wasi_nn_backend"):
                    yield "internal", alias.name.split(".", 1)[1] if "." in alias.name \
                        else "__init__"
                else:
                    yield "external", alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
                if not name.startswith("wasi_nn_backend"):
                    yield "external", name
                    continue
                target = name.split(".")[1:]
            else:
                target = package[:len(package) - (node.level - 1)] \
                    + (node.module.split(".") if node.module else [])
            for alias in node.names:   # "from .pkg import module" imports the module
                yield "internal", ".".join(target + [alias.name]) or "__init__"


def _resolve(name: str, known: set[str]) -> str | None:
    """The module a dotted internal name lands in (a name imported from a module is that
    module)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return "__init__" if name else None


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(parts): (path, parts) for path, parts in _modules()}
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, (path, parts) in modules.items():
        edges = set()
        for kind, target in _imports(path, parts):
            if kind == "internal":
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def _layer(module: str) -> str:
    return LAYER_OF[module.split(".")[0]]


def test_only_llm_imports_llama_cpp():
    offenders = [str(path) for path, parts in _modules() if parts[0] != "llm"
                 for kind, name in _imports(path, parts)
                 if kind == "external" and name.split(".")[0] == "llama_cpp"]
    assert offenders == []


def test_core_has_no_threads():
    """core/ is pure: the engine owns every thread and every lock (engine/gate.py locks the
    queue limit callers share)."""
    offenders = [f"{path}: {name}" for path, parts in _modules() if parts[0] == "core"
                 for kind, name in _imports(path, parts)
                 if kind == "external"
                 and name.split(".")[0] in ("threading", "_thread", "concurrent")]
    assert offenders == []


def test_every_module_has_a_layer():
    for path, parts in _modules():
        assert parts[0] in LAYER_OF, f"{path} is in no layer: add it to LAYER_OF"


def test_imports_point_one_way():
    violations = []
    for module, targets in _graph().items():
        for target in targets:
            if target == "__init__" and module.startswith(("testing",)):
                continue
            if _layer(target) not in ALLOWED[_layer(module)]:
                violations.append(f"{module} ({_layer(module)}) imports {target} "
                                  f"({_layer(target)})")
    assert violations == []


# Edges never call another edge: each translates errors to its own wire format at its border.
SEPARATE_EDGES = ["wasi_nn", "adapters.wasm", "adapters.erlang", "adapters.http"]


def test_no_edge_imports_another():
    """The function API, the wasm host and the Erlang port each call the API, never one
    another (the CLI, the program on top, may start the wasm runner or the Erlang port)."""
    def edge_of(module: str) -> str | None:
        return next((edge for edge in SEPARATE_EDGES
                     if module == edge or module.startswith(edge + ".")), None)
    crossings = [f"{module} imports {target}" for module, targets in _graph().items()
                 for target in targets
                 if edge_of(target) is not None and module.startswith(("wasi_nn", "adapters"))
                 and edge_of(target) != edge_of(module)
                 and not module.startswith(("adapters.cli", "adapters.__init__"))]
    assert crossings == []


def test_no_import_cycles():
    """Tarjan's strongly connected components: every module alone in its own."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check itself: two modules importing each other (one for annotations only) are
    found."""
    package = tmp_path / "wasi_nn_backend"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "a.py").write_text("from .b import B\n")
    (package / "api" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = _graph()
    assert graph["api.a"] == {"api.b"} and graph["api.b"] == {"api.a"}
