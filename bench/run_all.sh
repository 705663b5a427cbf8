#!/usr/bin/env bash
# Every benchmark on the 250M model (serving.py also on a cheap-decode one), one after the other
# (about 45 minutes on 2 cores); each rewrites its section of bench/RESULTS.md. scale.py,
# backend_sampling.py and gpu.py use other models and run alone. Run on an otherwise idle machine:
# llama.cpp's threads spin, and anything else running distorts every number.
set -euo pipefail
cd "$(dirname "$0")"
py="${PYTHON:-../.venv/bin/python}"
"$py" make_model.py
./build_llama_bench.sh >/dev/null
for script in throughput single overhead multiturn swap kernels deterministic serving; do
  echo "== $script" >&2
  "$py" "$script.py"
done
