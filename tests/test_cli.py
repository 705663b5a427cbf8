from wasi_nn_backend.adapters import cli


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
