"""The C-to-wasm toolchain for the test guests in tests/adapters/wasm/c: clang + wasm-ld +
wasi-libc.

On Debian the four packages below give a clang that builds wasm32-wasi programs with no extra
flags (wasi-libc installs its headers in /usr/include/wasm32-wasi and its libraries in
/usr/lib/wasm32-wasi, where clang's wasm32-wasi driver looks). A wasi-sdk (WASI_SDK_PATH) works
too. When nothing works and we run as root, ensure_wasm_clang() installs the packages once.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import apt_packages  # tests/apt_packages.py (tests/ is on sys.path)

log = logging.getLogger(__name__)

DEBIAN_PACKAGES = ("clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32")
TARGET = "wasm32-wasi"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")
_PROBE = '#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n'

_compile_lock = threading.Lock()
_compiled: dict[str, Path] = {}  # content hash -> .wasm, for this test session


def _candidates() -> list[str]:
    found = []
    sdk = os.environ.get("WASI_SDK_PATH")
    if sdk:
        found.append(str(Path(sdk) / "bin" / "clang"))
    for name in ("clang", *(f"clang-{version}" for version in range(22, 13, -1))):
        path = shutil.which(name)
        if path:
            found.append(path)
    return [path for path in dict.fromkeys(found) if os.access(path, os.X_OK)]


def _sysroot_flags(clang: str) -> list[str]:
    """wasi-sdk (and a Debian /usr/share/wasi-sysroot, if a later release adds one) need
    --sysroot; Debian's wasm32-wasi driver already looks in /usr."""
    sdk = os.environ.get("WASI_SDK_PATH")
    roots = [Path(sdk) / "share" / "wasi-sysroot"] if sdk and clang.startswith(sdk) else []
    for root in [*roots, Path("/usr/share/wasi-sysroot")]:
        if (root / "include").is_dir():
            return [f"--sysroot={root}"]
    return []


def _command(clang: str, source: Path, output: Path) -> list[str]:
    return [clang, f"--target={TARGET}", *_sysroot_flags(clang), *CFLAGS,
            "-o", str(output), str(source)]


def _builds_wasm(clang: str) -> str | None:
    """None when this clang links a WASI program; otherwise what went wrong."""
    with tempfile.TemporaryDirectory(prefix="wasm-probe-") as tmp:
        source, output = Path(tmp) / "probe.c", Path(tmp) / "probe.wasm"
        source.write_text(_PROBE)
        try:
            done = subprocess.run(_command(clang, source, output), capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return str(error)
        if done.returncode == 0 and output.read_bytes()[:4] == b"\0asm":
            return None
        return done.stderr.strip() or f"exit status {done.returncode}"


def _find_working_clang() -> tuple[str | None, list[str]]:
    problems = []
    for clang in _candidates():
        problem = _builds_wasm(clang)
        if problem is None:
            return clang, problems
        problems.append(f"{clang}: {problem.splitlines()[-1] if problem else problem}")
    return None, problems


def _apt_install() -> str | None:
    """Install DEBIAN_PACKAGES quietly; None on success, else the reason it failed."""
    return apt_packages.install(DEBIAN_PACKAGES, "the wasm C toolchain")


@functools.lru_cache(maxsize=1)
def toolchain_status() -> tuple[str | None, str]:
    """find_or_install_clang(), once per process."""
    return find_or_install_clang()


def find_or_install_clang() -> tuple[str | None, str]:
    """(clang path or None, what was found or done): probed, and installed if missing."""
    def probe() -> tuple[str | None, str]:
        clang, problems = _find_working_clang()
        return clang, "; ".join(problems) or "no clang on PATH"
    return apt_packages.find_or_install(
        probe, _apt_install, DEBIAN_PACKAGES,
        missing=f"no clang that builds {TARGET} programs", describe=lambda clang: f"using {clang}",
        hint=" (or set WASI_SDK_PATH)")


def ensure_wasm_clang() -> str | None:
    """The path of a clang that builds wasm32-wasi programs, installing the Debian packages
    first when none does and we run as root; None when there is none (see toolchain_status)."""
    return toolchain_status()[0]


def compile_guest(source: Path, out_dir: Path) -> Path:
    """Compile one guest (with the headers next to it) to out_dir/<stem>-<hash>.wasm, once per
    test session per content. RuntimeError with clang's messages when it does not build."""
    clang, status = toolchain_status()
    if clang is None:
        raise RuntimeError(status)
    source = Path(source)
    digest = hashlib.sha256()
    for part in [source, *sorted(source.parent.glob("*.h"))]:
        digest.update(part.name.encode() + b"\0" + part.read_bytes() + b"\0")
    digest.update(" ".join(_command(clang, Path("x"), Path("y"))).encode())
    key = digest.hexdigest()[:16]
    with _compile_lock:
        cached = _compiled.get(key)
        if cached is not None and cached.exists():
            return cached
        output = Path(out_dir) / f"{source.stem}-{key}.wasm"
        output.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(_command(clang, source, output), capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {source.name} failed:\n{done.stderr}")
        _compiled[key] = output
        log.info("compiled %s -> %s", source.name, output)
        return output
