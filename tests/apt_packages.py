"""Installing the Debian packages a test group needs (clang for wasm32, Erlang), once, quietly,
when they are missing and the tests run as root. Shared by tests/wasm and tests/erlang."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence

log = logging.getLogger(__name__)


def can_install() -> bool:
    """Whether these tests may install packages: running as root, with apt-get."""
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def install(packages: Sequence[str], purpose: str) -> str | None:
    """apt-get update + install ``packages``; None on success, else the reason it failed."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        log.warning("installing %s: %s", purpose, " ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(command)}: {error}"
        if done.returncode != 0:
            return f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    return None
