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
