"""A 10-turn chat: time to first token (TTFT) per turn, for us and for llama-cpp-python's
``Llama`` (create_chat_completion, which re-evaluates whatever its single cache cannot reuse).
User messages have equal token counts; replies are 32 greedy tokens. Shows that our turn k
prefills only its new tokens (the session keeps its KV sequence and continues from the tokens
it generated), so TTFT stays flat as the history grows.

Two scenarios, each in one run: one chat alone, and two users' chats interleaved turn by turn
(what a server sees; ``Llama`` has one cache, so every turn of an interleaved chat starts over).

Run: .venv/bin/python bench/multiturn.py [--turns 10]
"""
from __future__ import annotations

import argparse
import time

import common
from common import EOG
from make_model import model_path
from throughput import open_llama, open_ours

REPLY = 32
SYSTEM = "You are a helpful assistant."


def message(turn: int, user: int) -> str:
    return (f"Question {turn % 10} from user {user % 10}: tell me what the little cat and the "
            f"dog did when the sun was up and the water was long")


class OursChat:
    def __init__(self, graph, scenario: int = 0) -> None:
        self.session = graph.session(system=f"{SYSTEM} Scenario {scenario}.")

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
        self.messages = [{"role": "system", "content": f"{SYSTEM} Scenario {scenario}."}]

    def evaluated(self) -> int:
        return int(self.C.llama_perf_context(self.llm._ctx.ctx).n_p_eval)

    def turn(self, text: str) -> tuple[float, int]:
        self.messages.append({"role": "user", "content": text})
        before = self.evaluated()
        began = time.perf_counter()
        ttft, reply = None, []
        for chunk in self.llm.create_chat_completion(
                self.messages, max_tokens=REPLY, temperature=0.0, stream=True,
                logit_bias={t: -1e9 for t in EOG}):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    path = model_path()
    llm = open_llama(path)
    llm.n_ctx()  # loaded
    sections = []
    verdicts = []
    with open_ours(path, 4) as backend:
        graph = backend.graphs[0]
        tokens = {len(graph.session().tokenize_prompt(message(t, u)))
                  for t in range(args.turns) for u in range(2)}
        assert len(tokens) == 1, f"user messages differ in size: {tokens}"
        OursChat(graph, 9).turn(message(0, 9))  # warm-up
        for users in (1, 2):
            llm.reset()
            # Users of each scenario say different things: no KV prefix to copy between them.
            ours = converse([OursChat(graph, users) for _ in range(users)], args.turns)[0]
            theirs = converse([LlamaChat(llm, users) for _ in range(users)], args.turns)[0]
            rows = ["| turn | ours TTFT ms | ours prefilled tokens | Llama TTFT ms | "
                    "Llama evaluated tokens |", "|---:|---:|---:|---:|---:|"]
            for k, ((a, pa), (b, pb)) in enumerate(zip(ours, theirs), 1):
                rows.append(f"| {k} | {a * 1000:.0f} | {pa} | {b * 1000:.0f} | {pb} |")
            ratio = ours[-1][0] / ours[0][0]
            llama_ratio = theirs[-1][0] / theirs[0][0]
            title = "one chat" if users == 1 else "two chats interleaved (user 1 shown)"
            sections.append(f"### {title}\n\n" + "\n".join(rows) + "\n\n"
                            f"Turn {args.turns} / turn 1 TTFT: ours {ratio:.2f}x, "
                            f"Llama {llama_ratio:.2f}x.\n")
            verdicts.append(f"- {title}: turn {args.turns} TTFT = {ratio:.2f}x turn 1 "
                            f"(target <= 1.3x): {common.verdict(ratio <= 1.3)}")
            print(sections[-1], flush=True)
    body = (f"## Multi-turn chat (`bench/multiturn.py`)\n\n{common.machine()}; user messages "
            f"of {tokens.pop()} tokens, replies of {REPLY} greedy tokens.\n\n"
            + "\n".join(verdicts) + "\n\n" + "\n".join(sections))
    if not args.no_write:
        common.write_section("multiturn", body)


if __name__ == "__main__":
    main()
