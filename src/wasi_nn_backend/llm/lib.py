"""Process-wide llama.cpp set-up (backend init once, llama.cpp's log routed to `logging`,
build facts) and the file-level helpers that need no loaded model (GGUF check, quantize).

This is the one module that touches llama.cpp's global state (the logger is global and not
thread-safe in C, so it is set once, under a lock).
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

import llama_cpp as _llama_pkg
import llama_cpp.llama_cpp as C

from .. import errors

LLAMA_LOGGER = logging.getLogger("wasi_nn_backend.llama")

# enum ggml_log_level as in the ggml.h this wheel ships: NONE=0, DEBUG=1, INFO=2, WARN=3,
# ERROR=4, CONT=5 (continue the previous line). llama_cpp/_logger.py's own table is stale
# (INFO=1 ... DEBUG=4); do not copy it.
# llama.cpp's INFO is a model-load report of dozens of lines per context: it goes to DEBUG so
# that level "info" shows what this package does, and "debug" shows llama.cpp's details too.
_GGML_TO_LOGGING = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING,
                    4: logging.ERROR}
_GGML_LOG_CONT = 5

_init_lock = threading.Lock()
_initialized = False


class _LogForwarder:
    """Turns llama.cpp's fragmentary log calls into whole lines on LLAMA_LOGGER.

    llama.cpp emits a line in pieces (CONT continues the previous level), so text is buffered
    until a newline arrives; each complete line becomes one log record.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._level = logging.INFO
        self._partial = ""
        # Kept on the instance: ctypes does not keep the callback alive for C, and a collected
        # callback called from C is a crash.
        self.c_callback = C.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user_data: ctypes.c_void_p) -> None:
        try:
            chunk = (text or b"").decode("utf-8", errors="replace")
            with self._lock:
                if level != _GGML_LOG_CONT:
                    self._level = _GGML_TO_LOGGING.get(level, logging.INFO)
                lines = (self._partial + chunk).split("\n")
                self._partial = lines.pop()
                level_now = self._level
            for line in lines:
                if line and LLAMA_LOGGER.isEnabledFor(level_now):
                    LLAMA_LOGGER.log(level_now, "%s", line)
        except Exception:  # noqa: BLE001 - an exception must never unwind into C
            pass


_forwarder: _LogForwarder | None = None


def ensure_backend() -> None:
    """Initialise llama.cpp once per process and install our log callback. Thread-safe."""
    global _initialized, _forwarder
    if _initialized:
        return
    with _init_lock:
        if _initialized:
            return
        _forwarder = _LogForwarder()
        # `import llama_cpp` installed its own callback (printing to stderr); ours replaces it.
        C.llama_log_set(_forwarder.c_callback, ctypes.c_void_p(0))
        C.llama_backend_init()
        _initialized = True


# llama.cpp's build number (its release tag bNNNN, the count of its commits) of the commits
# this project knows. The libraries record only the commit (ggml_commit); llama-cpp-python
# builds from a shallow checkout, whose LLAMA_BUILD_NUMBER (in libllama-common) says 1.
_BUILD_NUMBERS = {"0c1e570": 11312}   # the llama.cpp that llama-cpp-python 0.3.36 vendors


def _ggml_text(name: str) -> str | None:
    """``ggml_version()`` / ``ggml_commit()`` of the libggml-base that llama_cpp's libllama
    loaded (dlsym on libllama searches its dependencies); None if the build exports none."""
    try:
        fn = ctypes.CFUNCTYPE(ctypes.c_char_p)((name, C._lib))
    except (AttributeError, OSError):
        return None
    value = fn()
    return _text(value) if value else None


def supports_gpu_offload() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan, ...)."""
    return bool(C.llama_supports_gpu_offload())


def build_info() -> dict[str, object]:
    """What the bindings say about the llama.cpp build (for usage JSON and diagnostics)."""
    version = getattr(C, "llama_version", None)
    ggml_commit = _ggml_text("ggml_commit")
    # "0c1e570-dirty": the tree had changes when built (llama-cpp-python patches its copy).
    commit = (ggml_commit or "unknown").removesuffix("-dirty")
    info: dict[str, object] = {
        # WasmEdge guests read these two (LlamaEdge as a u64 and a string, failing on null):
        # 0 is a commit this project knows no build number for.
        "llama_build_number": _BUILD_NUMBERS.get(commit, 0),
        "llama_commit": commit,
        "ggml_version": _ggml_text("ggml_version"),
        "ggml_commit": ggml_commit,
        "llama_version": _text(version()) if callable(version) else "unknown",
        "llama_cpp_python": getattr(_llama_pkg, "__version__", "unknown"),
        "state_seq_version": getattr(C, "LLAMA_STATE_SEQ_VERSION", None),
        "max_parallel_sequences": int(C.llama_max_parallel_sequences()),
        "supports_mmap": bool(C.llama_supports_mmap()),
        "supports_mlock": bool(C.llama_supports_mlock()),
        "supports_gpu_offload": supports_gpu_offload(),
    }
    raw = C.llama_print_system_info()
    info["system_info"] = raw.decode("utf-8", errors="replace").strip() if raw else ""
    return info


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


GGUF_MAGIC = b"GGUF"


def check_model_file(path: str) -> None:
    """ModelNotFound for a missing/unreadable file, InvalidEncoding for a non-GGUF one."""
    if os.path.isdir(path):
        raise errors.ModelNotFound(f"model path is a directory: {path}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise errors.ModelNotFound(f"cannot read model file {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        # Never quote the bytes: a guest or a remote caller could read any file's head that way.
        raise errors.InvalidEncoding(f"not a GGUF file (it does not start with 'GGUF'): {path}")


_QUANT_TYPES = {
    "f16": "LLAMA_FTYPE_MOSTLY_F16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


def quantize_model(src: str | os.PathLike[str], dst: str | os.PathLike[str], kind: str,
                   *, n_threads: int = 0) -> Path:
    """Quantize a GGUF file to ``dst`` with llama.cpp (``kind``: f16, q8_0, q4_0, ...).

    A file-to-file operation (no Model needed), used to make benchmark and test models.
    """
    ftype = _QUANT_TYPES.get(kind.lower())
    if ftype is None:
        raise errors.InvalidArgument(f"unknown quantization {kind!r}; "
                                     f"known: {', '.join(sorted(_QUANT_TYPES))}")
    check_model_file(os.fspath(src))
    ensure_backend()
    params = C.llama_model_quantize_default_params()
    params.ftype = getattr(C, ftype)
    params.nthread = int(n_threads)
    # llama_model_quantize catches its own C++ exceptions and returns non-zero.
    status = C.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    if status != 0:
        raise errors.BackendRuntimeError(f"quantizing {os.fspath(src)} to {kind} failed")
    return Path(dst)
