"""Which real chat templates render a conversation with tools the way the HTTP server renders
it (adapters/http/tools.py): llama.cpp's own collection (models/templates/*.jinja, in the
llama-cpp-python sdist we pin), each given two tools, a user question, an assistant call and
the tool's result. Not a speed benchmark: a check against templates nobody here wrote.

Usage: .venv/bin/python bench/templates.py [--dir DIR] [--out bench/results/templates.md]
(without --dir: the sdist that bench/build_llama_bench.sh downloads, fetched if missing)
"""
from __future__ import annotations

import argparse
import glob
import subprocess
import sys
import tarfile
from pathlib import Path

from wasi_nn_backend.adapters.http.tools import is_native, parse_tools, render
from wasi_nn_backend.errors import InvalidArgument
from wasi_nn_backend.llm.chat_template import render_template

HERE = Path(__file__).resolve().parent
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "unit": {"enum": ["c", "f"]}, "city": {"type": "string"}},
        "required": ["unit", "city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {
            "tz": {"enum": ["utc", "cet"]}}, "required": ["tz"]}}}]
CONVERSATION = [
    {"role": "user", "content": "What time is it?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "a1B2c3D4e", "type": "function",
         "function": {"name": "get_time", "arguments": '{"tz": "utc"}'}}]},
    {"role": "tool", "tool_call_id": "a1B2c3D4e", "name": "get_time", "content": "12:00"}]


def _templates_dir() -> Path:
    found = glob.glob(str(HERE / ".llama-bench/llama_cpp_python-*/vendor/llama.cpp/models/"
                          "templates"))
    if found:
        return Path(found[0])
    import llama_cpp
    out = HERE / ".llama-bench"
    out.mkdir(exist_ok=True)
    version = llama_cpp.__version__
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                    "--no-deps", f"llama-cpp-python=={version}", "-d", str(out)], check=True)
    with tarfile.open(out / f"llama_cpp_python-{version}.tar.gz") as archive:
        archive.extractall(out, filter="data")
    return out / f"llama_cpp_python-{version}/vendor/llama.cpp/models/templates"


def check(path: Path) -> tuple[str, str]:
    """(the way: native / generic, "ok" or why the template refused)."""
    template = path.read_text()
    tools = parse_tools({"tools": TOOLS})
    native = is_native(template)

    def chat(messages, tools):
        return render_template(template, messages, add_generation_prompt=True,
                               bos_token="<s>", eos_token="</s>", tools=tools)
    try:
        text = render(chat, CONVERSATION, tools, native)
    except InvalidArgument as error:
        return ("native" if native else "generic"), error.message
    missing = [w for w in ("get_weather", "12:00", "utc") if w not in text]
    return ("native" if native else "generic"), (
        "ok" if not missing else "rendered without " + ", ".join(missing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "templates.md")
    args = parser.parse_args()
    folder = args.dir or _templates_dir()
    rows = [(p.name, *check(p)) for p in sorted(folder.glob("*.jinja"))]
    ok = sum(1 for _, _, result in rows if result == "ok")
    lines = [f"# Tool conversations through {len(rows)} real chat templates",
             "", f"{ok} of {len(rows)} render the tools, the call and its result "
             "(`bench/templates.py`, llama.cpp's models/templates).", "",
             "| template | way | result |", "|---|---|---|"]
    lines += [f"| {name} | {way} | {result.replace('|', '/')} |" for name, way, result in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{ok} of {len(rows)} templates render a tool conversation; table: {args.out}")


if __name__ == "__main__":
    main()
