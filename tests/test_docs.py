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
