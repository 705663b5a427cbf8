from pathlib import Path

import pytest

from wasi_nn_backend.adapters import bundled, cli

ROOT = Path(__file__).resolve().parents[2]


def test_demo_recites_the_zen_one_session_per_line(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "sessions: 19" in out
    for line in ("[ 1] Beautiful is better than ugly.",
                 "Special cases aren't special enough to break the rules.",
                 "Namespaces are one honking great idea -- let's do more of those!"):
        assert line in out
    assert "19/19 lines exactly as in `import this`" in out


def test_demo_with_fewer_sessions(capsys):
    assert cli.main(["demo", "--sessions", "3"]) == 0
    assert "3/3 lines exactly" in capsys.readouterr().out


def test_generate_and_info(tiny_model_path, capsys):
    assert cli.main(["generate", tiny_model_path, "-p", "Hello", "--config",
                     '{"temperature": 0, "max_tokens": 5}', "--stream"]) == 0
    captured = capsys.readouterr()
    assert '"output_tokens": 5' in captured.err
    assert cli.main(["info", tiny_model_path]) == 0
    assert "architecture" in capsys.readouterr().out


def test_error_paths_are_one_line(tiny_model_path, tmp_path, capsys):
    cases = [
        (["generate", str(tmp_path / "missing.gguf"), "-p", "x"], "model_not_found"),
        (["generate", tiny_model_path, "-p", "x", "--config", "{not json"], "invalid_encoding"),
        (["generate", tiny_model_path, "-p", "x", "--config", '{"top_p": "high"}'],
         "invalid_argument"),
        (["generate", tiny_model_path, "-p", "x", "--config", "@" + str(tmp_path / "none")],
         "No such file"),
        (["demo", "--model", str(tmp_path / "missing.gguf")], "model_not_found"),
    ]
    for argv, expected in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (argv, err)


def test_progress_bar_only_on_a_terminal(tiny_model_path):
    import io

    from wasi_nn_backend import Backend
    from wasi_nn_backend.adapters import terminal

    class Tty(io.StringIO):
        def isatty(self):
            return True
    with Backend({"logging": {"level": "error"}}) as backend:
        tty, pipe = Tty(), io.StringIO()
        terminal.load(backend, tiny_model_path, err=tty)
        terminal.load(backend, tiny_model_path, err=pipe)
    assert "100%" in tty.getvalue() and "loading" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_version(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"wasi-nn-backend {version('wasi-nn-backend')}"


def test_unknown_config_keys_warn_by_default(tiny_model_path, capsys):
    assert cli.main(["generate", tiny_model_path, "-p", "Hello", "--config",
                     '{"temprature": 0, "max_tokens": 2}']) == 0
    err = capsys.readouterr().err
    assert "did you mean 'temperature'?" in err and err.count("temprature") == 1


def test_quiet_hides_warnings_and_verbose_shows_info(tiny_model_path, capsys):
    argv = ["generate", tiny_model_path, "-p", "Hello", "--config",
            '{"temprature": 0, "max_tokens": 2}']
    assert cli.main(argv + ["--quiet"]) == 0
    assert "temprature" not in capsys.readouterr().err
    assert cli.main(["--verbose"] + argv) == 0
    err = capsys.readouterr().err
    assert "temprature" in err and "backend ready" in err


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["info", "x.gguf", "--verbose", "--quiet"])
    assert done.value.code == 2


@pytest.mark.parametrize("count", ["0", "-3"])
def test_demo_needs_a_session(count, capsys):
    assert cli.main(["demo", "--sessions", count]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid_argument" in err[0] and "--sessions" in err[0]


def test_a_demo_line_that_fails_says_why(tiny_model_path, capsys):
    assert cli.main(["demo", "--model", tiny_model_path, "--sessions", "2"]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert len(rows) == 2
    for row in rows:   # the random tiny model never ends a line: it runs out of tokens
        assert "DIFFERS (length: 64 tokens, no end of line)" in row, row


def test_erlang_client_prints_its_folder_and_writes_the_files(tmp_path, capsys):
    assert cli.main(["erlang-client"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "src" / "wasi_nn.erl").is_file() and (folder / "erlang-protocol.md").is_file()
    dest = tmp_path / "client"
    assert cli.main(["erlang-client", "--dest", str(dest)]) == 0
    written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert written == sorted(bundled.ERLANG_FILES)
    for name in bundled.ERLANG_FILES:   # the repository's files, the README and protocol aside
        if name not in ("README.md", "erlang-protocol.md"):
            assert (dest / name).read_bytes() == (ROOT / "erlang" / name).read_bytes(), name
    (tmp_path / "file").write_text("")
    assert cli.main(["erlang-client", "--dest", str(tmp_path / "file")]) == 2
    assert "invalid_argument" in capsys.readouterr().err
