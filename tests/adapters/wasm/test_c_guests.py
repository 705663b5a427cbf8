"""Real WebAssembly guests written in C (tests/adapters/wasm/c), compiled with clang for
wasm32-wasi and run in the wasmtime host: they call the wasi_ephemeral_nn imports exactly as a C
program would, with pointers into their own linear memory.

The toolchain (clang, wasm-ld, wasi-libc) is installed on first use when missing and we run as
root; when it cannot be found or installed these tests FAIL with the reason: a skipped check is
a check not done.
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from wasi_nn_backend.adapters.wasm.host import NnHost
from wasi_nn_backend.adapters.wasm.runner import GuestResult, run_guest
from wasi_nn_backend.api.backend import Backend

try:  # tests/adapters/wasm as a package, or (pytest's default rootdir mode) as a plain directory
    from . import toolchain
except ImportError:
    import toolchain

GUEST_SOURCES = Path(__file__).parent / "c"
# What the guests send (nn.h): load config {"ctx-size":256}; metadata greedy, 8 tokens, no EOS.
MODEL_CONFIG = {"model": {"n_ctx": 256}}
REQUEST = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}
GENERATED_TOKENS = 8
USAGE_KEYS = {"input_tokens", "output_tokens", "llama_build_number", "llama_commit"}
# 16 prompts: 4 guests x 4 contexts in the concurrency test; the first few everywhere else.
PROMPTS = (
    "Once upon a time", "The cat sat on", "hello world", "Tell me a story about the sun",
    "the dog ran", "what is the answer", "good night", "a little cat was happy",
    "people like water", "write one word", "the first day", "how many people",
    "there was a model", "say yes or no", "my number is", "come and look at this",
)
JOIN_TIMEOUT_S = 120.0
UNKNOWN_ALIAS_ERRNO = 8  # not_found, as WasmEdge answers load_by_name for an unknown alias


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wasm_clang() -> str:
    clang, status = toolchain.toolchain_status()
    if clang is None:
        pytest.fail(f"the C-to-wasm toolchain is unavailable: {status}", pytrace=False)
    return clang


@pytest.fixture(scope="session")
def guests(wasm_clang: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("c-guests")
    return {source.stem: toolchain.compile_guest(source, out_dir)
            for source in sorted(GUEST_SOURCES.glob("*.c"))}


@pytest.fixture(scope="module")
def host(tiny_model_path: str):
    with NnHost(preloads=(f"default:GGML:AUTO:{tiny_model_path}",)) as nn_host:
        yield nn_host


@pytest.fixture(scope="module")
def expected(tiny_model_path: str) -> dict[str, dict[str, Any]]:
    """What the Python API gives for each prompt with the guests' settings (completion mode)."""
    results = {}
    with Backend() as backend:
        graph = backend.load(tiny_model_path, MODEL_CONFIG)
        for prompt in PROMPTS:
            with graph.session() as session:
                completion = session.complete(prompt, **REQUEST)
                results[prompt] = {"text": completion.text.encode("utf-8"),
                                   "input_tokens": len(session.tokenize_prompt(prompt))}
    return results


# -- helpers -----------------------------------------------------------------------------------
def describe(result: GuestResult) -> str:
    return (f"exit={result.exit_code} trap={result.trap!r}\nstdout={result.stdout[:2000]!r}\n"
            f"stderr={result.stderr[:2000]!r}")


def assert_clean_exit(result: GuestResult) -> None:
    assert result.trap is None and result.exit_code == 0, describe(result)


def engine_counters(nn_host: NnHost) -> dict[int, dict[str, Any]]:
    """Each loaded graph's engine counters (steps, decode_tokens, finished, ...) by handle."""
    return {handle: dict(counters) for handle, counters in nn_host.backend.stats().engines.items()}


def run_in_thread(results: dict[str, GuestResult | BaseException], name: str, *args: Any,
                  **kwargs: Any) -> threading.Thread:
    """run_guest(*args, **kwargs) on a new thread; its result (or exception) lands in results."""
    def target() -> None:
        try:
            results[name] = run_guest(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - reported by the test, not the thread
            results[name] = error

    thread = threading.Thread(target=target, name=f"guest-{name}", daemon=True)
    thread.start()
    return thread


# -- 1. chat -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_chat_guest_matches_python_api(host, guests, expected, prompt):
    result = run_guest(guests["chat"], (prompt,), host=host)

    assert_clean_exit(result)
    assert result.stdout == expected[prompt]["text"]
    usage = json.loads(result.stderr)
    assert USAGE_KEYS <= usage.keys(), usage
    assert usage["output_tokens"] == GENERATED_TOKENS
    assert usage["input_tokens"] == expected[prompt]["input_tokens"]


def test_chat_guest_exit_code_is_the_failing_errno(tiny_model_path, guests):
    """No "default" alias on this host: the guest's first call fails and it exits with it."""
    with NnHost(preloads=(f"other:GGML:AUTO:{tiny_model_path}",)) as other_host:
        result = run_guest(guests["chat"], ("hello",), host=other_host)
    assert result.trap is None, describe(result)
    assert result.exit_code == UNKNOWN_ALIAS_ERRNO, describe(result)
    assert result.stderr.startswith(b"nn_load_alias(") and result.stdout == b""


# -- 2. streaming ------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS[:3])
def test_streaming_guest_concatenates_to_the_chat_output(host, guests, prompt):
    streamed = run_guest(guests["stream"], (prompt,), host=host)
    whole = run_guest(guests["chat"], (prompt,), host=host)

    assert_clean_exit(streamed)
    assert_clean_exit(whole)
    assert streamed.stdout == whole.stdout
    usage = json.loads(streamed.stderr)
    assert USAGE_KEYS <= usage.keys(), usage
    assert usage["output_tokens"] == GENERATED_TOKENS


# -- 3. many contexts, many guests -------------------------------------------------------------
def test_four_guests_with_four_contexts_each_at_once(host, guests, expected):
    prompt_sets = [PROMPTS[i:i + 4] for i in range(0, 16, 4)]
    alone = [run_guest(guests["multi"], prompts, host=host) for prompts in prompt_sets]
    before = engine_counters(host)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="multi-guest") as pool:
        futures = [pool.submit(run_guest, guests["multi"], prompts, host=host)
                   for prompts in prompt_sets]
        together = [future.result(timeout=JOIN_TIMEOUT_S) for future in futures]
    after = engine_counters(host)

    for prompts, single, result in zip(prompt_sets, alone, together):
        assert_clean_exit(single)
        assert single.stdout.split(b"\0")[:-1] == [expected[p]["text"] for p in prompts]
        assert_clean_exit(result)
        assert result.stdout == single.stdout
    # All 16 contexts x 8 tokens went through one engine (the alias's graph stays loaded between
    # guests); batching packs many sequences into each step.
    assert len(before) == 1 and before.keys() == after.keys(), (before, after)
    handle = next(iter(after))
    finished = after[handle]["finished"] - before[handle]["finished"]
    steps = after[handle]["steps"] - before[handle]["steps"]
    assert finished == len(PROMPTS), (before, after)
    assert 0 < steps < len(PROMPTS) * GENERATED_TOKENS, (before, after)


# -- 4. error codes seen from C ----------------------------------------------------------------
def test_error_codes_reach_the_guest_and_it_carries_on(host, guests, expected):
    result = run_guest(guests["errors"], (), host=host)
    assert_clean_exit(result)
    lines = result.stdout.split(b"\n")
    codes = dict(line.decode().split("=") for line in lines if b"=" in line)
    codes = {name: int(value) for name, value in codes.items()}
    text = expected["Once upon a time"]["text"]

    assert codes["unknown_alias"] == UNKNOWN_ALIAS_ERRNO, codes
    assert codes["load"] == 0 and codes["init"] == 0, codes
    assert codes["bad_tensor_ptr"] == 1, codes
    assert codes["straddling_tensor_ptr"] == 1, codes
    assert codes["bad_data_ptr"] == 1, codes
    # The context is intact: the same prompt still gives the same text.
    assert codes["set_prompt"] == 0 and codes["set_metadata"] == 0 and codes["compute"] == 0
    assert codes["small_buffer"] == 7, codes
    assert codes["needed"] == len(text), codes
    assert codes["full_buffer"] == 0 and codes["full_written"] == len(text), codes
    assert codes["bad_out_ptr"] == 1, codes
    assert codes["unknown_context"] == 8, codes  # not_found
    assert lines[-2] == text


# -- 5. misbehaving guests ---------------------------------------------------------------------
def test_trap_and_endless_loop_do_not_disturb_a_concurrent_guest(host, guests, expected):
    prompt = PROMPTS[0]
    results: dict[str, GuestResult | BaseException] = {}
    threads = [
        run_in_thread(results, "spin", guests["spin"], (prompt,), host=host, max_time=2),
        run_in_thread(results, "trap", guests["trap"], (prompt,), host=host),
        run_in_thread(results, "chat", guests["chat"], (prompt,), host=host),
    ]
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive(), f"{thread.name} still running after {JOIN_TIMEOUT_S}s"
    for name, result in results.items():
        assert isinstance(result, GuestResult), f"{name}: run_guest raised {result!r}"

    trapped, spun = results["trap"], results["spin"]
    assert trapped.exit_code != 0 and "unreachable" in (trapped.trap or ""), describe(trapped)
    assert spun.exit_code != 0 and "max_time" in (spun.trap or ""), describe(spun)
    assert_clean_exit(results["chat"])
    assert results["chat"].stdout == expected[prompt]["text"]
    # The dead guests left nothing behind, and the host still serves guests afterwards.
    stats = host.backend.stats()
    assert stats.sessions == 0 and stats.sessions_active == 0, stats
    again = run_guest(guests["stream"], (prompt,), host=host)
    assert_clean_exit(again)
    assert again.stdout == expected[prompt]["text"]


# -- the toolchain's decisions (monkeypatched: no compiler, no apt-get run) ----------------------
def test_toolchain_missing_and_not_root_says_what_to_install(monkeypatch):
    monkeypatch.setattr(toolchain, "_find_working_clang", lambda: (None, ["clang: no wasm-ld"]))
    monkeypatch.setattr(toolchain.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(toolchain, "_apt_install", lambda: pytest.fail("apt-get run as non-root"))

    clang, status = toolchain.find_or_install_clang()

    assert clang is None
    assert all(package in status for package in toolchain.DEBIAN_PACKAGES), status
    assert "clang: no wasm-ld" in status and "root" in status


@pytest.mark.parametrize("install_error", [None, "apt-get update failed (100): no network"])
def test_toolchain_missing_as_root_installs_once(monkeypatch, install_error):
    probes = iter([(None, ["clang: no wasm-ld"]), ("/usr/bin/clang", [])])
    installs = []
    monkeypatch.setattr(toolchain, "_find_working_clang", lambda: next(probes))
    monkeypatch.setattr(toolchain.os, "geteuid", lambda: 0)
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(toolchain, "_apt_install", lambda: installs.append(1) or install_error)

    clang, status = toolchain.find_or_install_clang()

    assert installs == [1]
    if install_error is None:
        assert clang == "/usr/bin/clang" and "installed" in status, status
    else:
        assert clang is None and install_error in status, status
