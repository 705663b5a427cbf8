"""A real server process (``python -m wasi_nn_backend.adapters.cli serve``) on a free port of
127.0.0.1 with the tiny models, and OpenAI's own client pointed at it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key"
START_DEADLINE_S = 60.0
# deterministic: a session's greedy tokens are the same alone or among 63 others
SERVER_CONFIG = {"model": {"deterministic": True, "n_seq_max": 8, "n_ctx": 512},
                 "backend": {"max_sessions": 200}}


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log: Path

    auth = {"Authorization": f"Bearer {API_KEY}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, headers=self.auth)

    def stats(self) -> dict:
        return self.get("/server/stats").json()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(server: Server) -> None:
    """Poll until the server answers (it loads the models first), with a deadline."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited: {server.log.read_text()}")
        try:
            if server.get("/v1/models").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the server did not answer in time")


@pytest.fixture(scope="session")
def server(tiny_model_path: str, tiny_encoder_path: str,
           tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "stderr.txt"
    command = [sys.executable, "-m", "wasi_nn_backend.adapters.cli", "serve",
               f"tiny:GGML:AUTO:{tiny_model_path}", "--embedding-model",
               f"enc:GGML:AUTO:{tiny_encoder_path}", "--port", str(port),
               "--api-key", API_KEY, "--config", json.dumps(SERVER_CONFIG)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:   # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def client(server: Server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0,
                         timeout=60)


@pytest.fixture(scope="session")
def async_client(server: Server):
    import openai
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0,
                              timeout=120)
