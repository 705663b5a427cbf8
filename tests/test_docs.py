"""The README stays in step with the code: every configuration key and CLI command is there."""
from __future__ import annotations

from pathlib import Path

import pytest

from wasi_nn_backend.adapters import cli
from wasi_nn_backend.config import Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("section", list(Config.model_fields))
def test_every_config_key_is_documented(section):
    model = Config.model_fields[section].annotation
    missing = [key for key in model.model_fields if f"`{key}`" not in README]
    assert missing == [], f"README lacks {section} keys {missing}"


def test_every_cli_command_is_documented():
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        assert f"wasi-nn-backend {name}" in README


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.gguf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model_not_found" in err[0]
    assert cli.main(["generate", str(tmp_path / "x.gguf"), "-p", "hi", "--config", "{bad"]) == 2
    assert "invalid_encoding" in capsys.readouterr().err


def test_readme_links_stay_in_the_repository():
    """A clone (or the sdist) has no ../shared: every relative link points at a file inside."""
    import re
    root = Path(__file__).resolve().parents[1]
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (root / target.split("#")[0]).resolve()
        assert path.is_relative_to(root) and path.exists(), target


DESIGN = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text()
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wasi_nn_backend"


def _design_paths() -> set[str]:
    """Every path docs/DESIGN.md names: the ``src/wasi_nn_backend/`` tree (a ``name/`` line
    opens a directory for the lines indented under it; every ``x.py`` on a line is a module of
    the directory it stands in) and backquoted ``pkg/x.py`` paths anywhere."""
    import re
    named: set[str] = set()
    stack: list[tuple[int, str]] = []   # (indent, directory path) of the open directories
    in_tree = False
    for line in DESIGN.splitlines():
        if line.startswith("src/wasi_nn_backend/"):
            in_tree = True
            continue
        indent = len(line) - len(line.lstrip())
        if in_tree and (line.startswith("```") or (line.strip() and indent == 0)):
            in_tree = False
        if in_tree and line.strip():
            while stack and stack[-1][0] >= indent:
                stack.pop()
            here = stack[-1][1] if stack else ""
            opens = re.match(r"\s*([a-z_]+)/(\s|$)", line)
            if opens:
                here += opens.group(1) + "/"
                stack.append((indent, here))
                named.add(here)
            for word in re.findall(r"(?<![\w/.])((?:[a-z_]+/)*[a-z_]+\.py)\b", line):
                absolute = "/" in word and (PACKAGE / word.split("/")[0]).is_dir()
                path = word if absolute else here + word
                named.add(path)
                if "/" in path:
                    named.add(path.rsplit("/", 1)[0] + "/")
        for path in re.findall(r"`((?:api|engine|core|llm|config|adapters|wasi_nn|testing)"
                               r"/[\w/]+\.py)", line):
            named.add(path)
    return named


def test_design_names_only_modules_that_exist():
    missing = sorted(p for p in _design_paths() if not (PACKAGE / p).exists())
    assert missing == [], f"docs/DESIGN.md names what is not in src/: {missing}"


def test_design_names_every_package_and_api_module():
    named = _design_paths()
    packages = sorted(p.name + "/" for p in PACKAGE.iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    assert [p for p in packages if p not in named] == []
    api = sorted("api/" + p.name for p in (PACKAGE / "api").glob("*.py")
                 if p.name != "__init__.py")
    assert [m for m in api if m not in named] == []
