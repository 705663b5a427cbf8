"""Installing the Debian packages a test group needs (clang for wasm32, Erlang), once, quietly,
when they are missing and the tests run as root. Shared by tests/adapters/wasm and
tests/adapters/erlang."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def find_or_install(probe: Callable[[], tuple[T | None, str]], install: Callable[[], str | None],
                    packages: Sequence[str], *, missing: str, describe: Callable[[T], str],
                    hint: str = "") -> tuple[T | None, str]:
    """(what ``probe`` found or None, what was found or done): probed, and when nothing works
    and we may install (root, apt-get), ``install`` once and probe again. ``missing`` names
    what is lacking ("no usable Erlang toolchain"), ``describe`` what was found."""
    found, problem = probe()
    if found:
        return found, describe(found)
    names = " ".join(packages)
    if not can_install():
        return None, (f"{missing} ({problem}); install the Debian packages {names}{hint}, or "
                      "run the tests as root with apt-get available so they install them")
    failure = install()
    if failure:
        return None, f"{missing} ({problem}) and installing it failed: {failure}"
    found, after = probe()
    if found:
        log.warning("installed %s; %s", names, describe(found))
        return found, f"installed {names}; {describe(found)}"
    return None, f"installed {names} but still {missing}: {after}"
