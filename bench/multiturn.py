"""A 10-turn chat: time to first token (TTFT) per turn, for us and for llama-cpp-python's
``Llama`` (create_chat_completion, which re-evaluates whatever its single cache cannot reuse).
User messages have equal token counts; replies are 32 greedy tokens; each conversation runs
three times and a turn's fastest counts (one TTFT is a single ~100 ms sample, too noisy alone
on a shared machine). Shows that our turn k prefills only its new tokens (the session keeps its
KV sequence and continues from the tokens it generated); what still grows is attention over the
longer history.

Two scenarios, each in one run: one chat alone, and two users' chats interleaved turn by turn
(what a server sees; ``Llama`` has one cache, so every turn of an interleaved chat starts over).
Both with flash attention on (what llama.cpp picks for "auto" on this CPU) and off: on this
CPU llama.cpp's flash-attention kernel makes prefill cost grow faster with the context length
(bench/kernels.py measures it). Every system prompt starts with its own scenario number, so no
session finds a 16-token prefix to copy from another (ours would, from the warm-up's, and
start turn 1 cheaper than Llama, whose cache is reset).

Run: .venv/bin/python bench/multiturn.py [--turns 10]
"""
from __future__ import annotations

import argparse
import json
import time

import common
from make_model import model_path
import throughput

REPLY = 32
N_CTX = 2048  # ten turns of ~80 tokens fit
SYSTEM = "You are a helpful assistant."


def message(turn: int, user: int) -> str:
    return (f"Question {turn % 10} from user {user % 10}: tell me what the little cat and the "
            f"dog did when the sun was up and the water was long")


class OursChat:
    def __init__(self, graph, scenario: int = 0) -> None:
        self.session = graph.session(system=f"Scenario {scenario}. {SYSTEM}")

    def turn(self, text: str) -> tuple[float, int]:
        began = time.perf_counter()
        stream = self.session.chat_stream(text, temperature=0, ignore_eos=True,
                                          max_tokens=REPLY)
        next(iter(stream))
        ttft = time.perf_counter() - began
        completion = stream.result()
        self.session.history  # settles the turn into the history
        return ttft, completion.prefilled_tokens


class LlamaChat:
    def __init__(self, llm, scenario: int = 0) -> None:
        import llama_cpp
        self.llm, self.C = llm, llama_cpp
        self.messages = [{"role": "system", "content": f"Scenario {scenario}. {SYSTEM}"}]

    def evaluated(self) -> int:
        return int(self.C.llama_perf_context(self.llm._ctx.ctx).n_p_eval)

    def turn(self, text: str) -> tuple[float, int]:
        self.messages.append({"role": "user", "content": text})
        before = self.evaluated()
        began = time.perf_counter()
        ttft, reply = None, []
        for chunk in self.llm.create_chat_completion(
                self.messages, max_tokens=REPLY, temperature=0.0, stream=True):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta is not None and ttft is None:
                ttft = time.perf_counter() - began
            reply.append(delta or "")
        self.messages.append({"role": "assistant", "content": "".join(reply)})
        return ttft, self.evaluated() - before


def converse(chats: list, turns: int) -> list[list[tuple[float, int]]]:
    """Every chat's (TTFT, prompt tokens evaluated) per turn, users taking turns."""
    results = [[] for _ in chats]
    for turn in range(turns):
        for user, chat in enumerate(chats):
            results[user].append(chat.turn(message(turn, user)))
    return results


def work_in_this_process(who: str, users: int, turns: int, flash: str, repeat: int = 3
                         ) -> list[tuple[float, int]]:
    """User 1's (TTFT, prompt tokens evaluated) per turn, ``users`` chats interleaved; the
    conversation runs ``repeat`` times (other words each time) and each turn's fastest counts."""
    path = model_path()
    throughput.FLASH = flash
    runs = []
    if who == "llama":
        llm = throughput.open_llama(path, N_CTX)
        LlamaChat(llm, 99).turn(message(0, 9))  # warm-up
        for r in range(repeat):
            llm.reset()
            runs.append(converse([LlamaChat(llm, 10 * r + users) for _ in range(users)], turns)[0])
    else:
        with throughput.open_ours(path, 4, N_CTX, flash_attn=flash) as backend:
            graph = backend.graphs[0]
            OursChat(graph, 99).turn(message(0, 9))  # warm-up
            # Every scenario and round starts differently: no KV prefix to copy between them.
            for r in range(repeat):
                runs.append(converse([OursChat(graph, 10 * r + users) for _ in range(users)],
                                     turns)[0])
    return [min(turn, key=lambda t: t[0]) for turn in zip(*runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        who, users, turns, flash = args.worker
        print(json.dumps(work_in_this_process(who, int(users), int(turns), flash)))
        return
    path = model_path()
    with throughput.open_ours(path, 1) as backend:
        session = backend.graphs[0].session()
        sizes = {len(session.tokenize_prompt(message(t, u)))
                 for t in range(args.turns) for u in range(2)}
    assert len(sizes) == 1, f"user messages differ in size: {sizes}"
    sections, verdicts = [], []
    for flash in ("on", "off"):  # llama.cpp's default for us ("auto") is on
        for users in (1, 2):
            args_ = (str(users), str(args.turns), flash)
            ours = common.worker("multiturn.py", "ours", *args_)
            theirs = common.worker("multiturn.py", "llama", *args_)
            rows = ["| turn | ours TTFT ms | ours prefilled tokens | Llama TTFT ms | "
                    "Llama evaluated tokens |", "|---:|---:|---:|---:|---:|"]
            for k, ((a, pa), (b, pb)) in enumerate(zip(ours, theirs), 1):
                rows.append(f"| {k} | {a * 1000:.0f} | {pa} | {b * 1000:.0f} | {pb} |")
            ratio = ours[-1][0] / ours[0][0]
            llama_ratio = theirs[-1][0] / theirs[0][0]
            title = (("one chat" if users == 1 else "two chats interleaved (user 1 shown)")
                     + f", flash attention {flash}")
            sections.append(f"### {title}\n\n" + "\n".join(rows) + "\n\n"
                            f"Turn {args.turns} / turn 1 TTFT: ours {ratio:.2f}x, "
                            f"Llama {llama_ratio:.2f}x.\n")
            verdicts.append(f"- {title}: turn {args.turns} TTFT = {ratio:.2f}x turn 1 "
                            f"(target <= 1.3x): {common.verdict(ratio <= 1.3)}; Llama "
                            f"{llama_ratio:.2f}x")
            print(verdicts[-1], flush=True)
    body = (f"## Multi-turn chat (`bench/multiturn.py`)\n\n{common.machine()}; user messages "
            f"of {sizes.pop()} tokens, replies of {REPLY} greedy tokens; each contender in a "
            f"process of its own.\n\n" + "\n".join(verdicts) + "\n\n" + "\n".join(sections))
    if not args.no_write:
        common.write_section("multiturn", body)


if __name__ == "__main__":
    main()
