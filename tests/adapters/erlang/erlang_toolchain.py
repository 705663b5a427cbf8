"""The Erlang toolchain for tests/adapters/erlang: erl + erlc + eunit (Debian: erlang-base,
erlang-eunit, erlang-dev; eunit.hrl lives in erlang-dev).

find_or_install() probes for a working erlc (one that compiles a module including eunit.hrl)
and, when there is none and we run as root with apt-get, installs the packages once, quietly.
It never skips: when it cannot get a toolchain it says why and the tests fail with that message.
compile_modules() builds .erl files with plain erlc. rebar3_status() does for rebar3 (Debian's
rebar3 package) what toolchain_status() does for erl/erlc; vm_env() is a VM's environment.
"""
from __future__ import annotations

import functools
import re
import logging
import os  # noqa: F401 (tests patch os.geteuid through this module)
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import apt_packages  # tests/apt_packages.py (tests/ is on sys.path)

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ("erlang-base", "erlang-eunit", "erlang-dev")
ERLC_FLAGS = ("+warnings_as_errors", "+debug_info")
_PROBE = ('-module(wasi_nn_probe).\n-include_lib("eunit/include/eunit.hrl").\n'
          'probe_test() -> ?assertEqual(2, 1 + 1).\n')


@dataclass(frozen=True)
class Toolchain:
    erl: str
    erlc: str
    otp_release: str


def _probe() -> tuple[Toolchain | None, str]:
    """(toolchain, "") when erl and erlc work and eunit.hrl is found; else (None, why)."""
    erl, erlc = shutil.which("erl"), shutil.which("erlc")
    if not erl or not erlc:
        return None, "no erl/erlc on PATH"
    with tempfile.TemporaryDirectory(prefix="erlang-probe-") as tmp:
        source = Path(tmp) / "wasi_nn_probe.erl"
        source.write_text(_PROBE)
        try:
            done = subprocess.run([erlc, "-o", tmp, str(source)], capture_output=True,
                                  text=True, timeout=120)
            if done.returncode != 0:
                return None, f"erlc cannot build an eunit module: {done.stdout}{done.stderr}"
            ran = subprocess.run(
                [erl, "-noshell", "-pa", tmp, "-eval",
                 'ok = eunit:test(wasi_nn_probe, []), '
                 'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'],
                capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, str(error)
        if ran.returncode != 0:
            return None, f"erl cannot run eunit: {ran.stdout}{ran.stderr}"
    return Toolchain(erl, erlc, ran.stdout.strip().splitlines()[-1]), ""


def _apt_install() -> str | None:
    """Install DEBIAN_PACKAGES quietly; None on success, else the reason it failed."""
    return apt_packages.install(DEBIAN_PACKAGES, "the Erlang toolchain")


def find_or_install() -> tuple[Toolchain | None, str]:
    """(toolchain or None, what was found or done): probed, and installed if missing."""
    return apt_packages.find_or_install(
        _probe, _apt_install, DEBIAN_PACKAGES,
        missing="no usable Erlang toolchain",
        describe=lambda found: f"using {found.erl} (OTP {found.otp_release})")


@functools.lru_cache(maxsize=1)
def toolchain_status() -> tuple[Toolchain | None, str]:
    """find_or_install(), once per process."""
    return find_or_install()


def compile_modules(toolchain: Toolchain, sources: Iterable[Path], out_dir: Path) -> Path:
    """erlc every source into out_dir (warnings are errors); RuntimeError with erlc's output."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [toolchain.erlc, *ERLC_FLAGS, "-o", str(out_dir), *map(str, sources)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n"
                           f"{done.stdout}{done.stderr}")
    return out_dir


def vm_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for an Erlang VM (erl, rebar3): ours without any WASI_NN_* variable (the
    eunit modules read those), plus ``extra``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("WASI_NN_")}
    return {**clean, **extra}


# -- rebar3 (Debian: rebar3; it brings the Erlang packages it needs) ---------------------------
REBAR3_PACKAGES = ("rebar3",)


@dataclass(frozen=True)
class Rebar3:
    path: str
    version: str  # `rebar3 version`: "rebar 3.19.0 on Erlang/OTP 25 Erts 13.1.5"


def _probe_rebar3() -> tuple[Rebar3 | None, str]:
    """(rebar3, "") when `rebar3 version` runs; else (None, why)."""
    rebar3 = shutil.which("rebar3")
    if not rebar3:
        return None, "no rebar3 on PATH"
    try:
        done = subprocess.run([rebar3, "version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    if done.returncode != 0:
        return None, f"`rebar3 version` failed ({done.returncode}): {done.stdout}{done.stderr}"
    return Rebar3(rebar3, done.stdout.strip().splitlines()[-1]), ""


def _apt_install_rebar3() -> str | None:
    """Install REBAR3_PACKAGES quietly; None on success, else the reason it failed."""
    return apt_packages.install(REBAR3_PACKAGES, "rebar3")


def find_or_install_rebar3() -> tuple[Rebar3 | None, str]:
    """(rebar3 or None, what was found or done): probed, and installed if missing (as root)."""
    return apt_packages.find_or_install(
        _probe_rebar3, _apt_install_rebar3, REBAR3_PACKAGES, missing="no usable rebar3",
        describe=lambda found: f"using {found.path} ({found.version})")


@functools.lru_cache(maxsize=1)
def rebar3_status() -> tuple[Rebar3 | None, str]:
    """find_or_install_rebar3(), once per process."""
    return find_or_install_rebar3()


def erl(toolchain: Toolchain, code_dir: Path, expr: str, env: dict[str, str],
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``erl -noshell -pa code_dir -eval expr`` in vm_env(env); output in the result."""
    return subprocess.run([toolchain.erl, "-noshell", "-pa", str(code_dir), "-eval", expr],
                          capture_output=True, text=True, errors="replace",
                          env=vm_env(env), timeout=timeout)


def eunit_passed(done: subprocess.CompletedProcess[str], what: str = "eunit") -> int:
    """The number of eunit tests passed; fails with the output unless all passed (each
    failure's test name and error first: the output's end alone may not reach them)."""
    output = done.stdout + done.stderr
    match = re.search(r"All (\d+) tests passed", output)
    failures = [output[max(0, m.start() - 300):m.start() + 1500]
                for m in re.finditer(r"\*failed\*", output)][:5]
    assert done.returncode == 0 and match, (f"{what} failed ({done.returncode}):\n"
                                            + "\n...\n".join(failures)
                                            + f"\n... output's end:\n{output[-6000:]}")
    return int(match.group(1))
