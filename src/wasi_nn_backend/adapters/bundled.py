"""Files the package carries as data (src/wasi_nn_backend/data/, in the wheel too): the demo
model and the Erlang client with its protocol document.

In the repository, models/zen-demo.gguf and the files in data/erlang/ are symbolic links, so
each file exists once; a wheel holds the files themselves.
"""
from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ..errors import InvalidArgument

DEMO_MODEL = "zen-demo.gguf"
# The Erlang client as a rebar3 project (erlang/ in the repository): usable as a rebar3
# dependency or built with plain erlc.
ERLANG_FILES = ("README.md", "erlang-protocol.md", "rebar.config", "config/sys.config.example",
                "src/wasi_nn.erl", "src/dev_wasi_nn_nif.erl", "src/wasi_nn_app.erl",
                "src/wasi_nn_sup.erl", "src/wasi_nn.app.src")


def _data() -> Path:
    # A package installed from a wheel or a checkout is a directory, so this is a real path.
    return Path(str(resources.files("wasi_nn_backend") / "data"))


def demo_model() -> Path:
    """The bundled demo model, zen-demo.gguf."""
    return _data() / DEMO_MODEL


def erlang_client_dir() -> Path:
    """The folder holding the Erlang client (a rebar3 project: src/wasi_nn.erl,
    src/dev_wasi_nn_nif.erl, the OTP application), its README and the protocol."""
    return _data() / "erlang"


def write_erlang_client(dest: str | Path) -> list[Path]:
    """Copy the Erlang client files into ``dest`` (created if missing); the paths written."""
    target = Path(dest)
    if target.exists() and not target.is_dir():
        raise InvalidArgument(f"--dest {str(target)!r} exists and is not a folder")
    written = []
    for name in ERLANG_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        written.append(Path(shutil.copyfile(erlang_client_dir() / name, target / name)))
    return written
