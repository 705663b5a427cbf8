from wasi_nn_backend.adapters import cli


def test_demo_runs_end_to_end(capsys):
    assert cli.main(["demo", "--sessions", "3", "--max-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "sessions: 3" in out and "total" in out
    assert "18 tokens in" in out


def test_generate_and_info(tiny_model_path, capsys):
    assert cli.main(["generate", tiny_model_path, "-p", "Hello", "--config",
                     '{"temperature": 0, "max_tokens": 5}', "--stream"]) == 0
    captured = capsys.readouterr()
    assert '"output_tokens": 5' in captured.err
    assert cli.main(["info", tiny_model_path]) == 0
    assert "architecture" in capsys.readouterr().out
