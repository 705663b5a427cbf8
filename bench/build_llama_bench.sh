#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench from the sources vendored in the llama-cpp-python sdist we
# pin (same llama.cpp commit as the bindings), into bench/.llama-bench/ (ignored by git).
# Usage: bench/build_llama_bench.sh [pip]   -> prints the binary's path
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/.llama-bench"
pip="${1:-$here/../.venv/bin/pip}"
version="$("$pip" show llama-cpp-python | awk '/^Version/{print $2}')"
bin="$out/build/bin/llama-bench"
if [ ! -x "$bin" ]; then
  mkdir -p "$out"
  "$pip" download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$out" >&2
  tar -xzf "$out/llama_cpp_python-$version.tar.gz" -C "$out"
  src="$out/llama_cpp_python-$version/vendor/llama.cpp"
  cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$out/build" --target llama-bench -j "$(nproc)" >&2
fi
echo "$bin"
