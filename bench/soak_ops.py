"""The soak's operations (bench/soak.py): seeded conversations and their replies run alone,
the operations a soak thread does on them, and the tally of what happened."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

from wasi_nn_backend import Backend, EndOfStream
from wasi_nn_backend.core.request import FinishReason
from wasi_nn_backend.errors import ErrorCode, WasiNnError

GREEDY = {"temperature": 0, "max_tokens": 8}
HANG_S = 60.0
HELD = 4  # sessions a thread keeps open between turns (more sessions than KV slots: swaps)
WORDS = ("the cat sat on a mat and then one little dog ran to see the sun when it was up "
         "hello world story once upon time good night water people").split()
OPS = {"conversation": 3, "stream": 2, "resume": 4, "cancel": 1, "close": 1}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Tally:
    """What the soak's threads did; thread-safe."""

    def __init__(self, threads: int) -> None:
        self._lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_by_op: Counter[str] = Counter()
        self.compared = self.mismatches = self.hangs = self.total = self.sessions_opened = 0
        self.prompt_tokens = self.prefilled_tokens = 0  # of the replies compared
        self.samples: list[str] = []
        self._running: list[tuple[float, str] | None] = [None] * threads
        self._flagged: set[tuple[int, float]] = set()

    def op(self, kind: str) -> None:
        with self._lock:
            self.ops[kind] += 1
            self.total += 1

    def error(self, kind: str, error: WasiNnError) -> None:
        with self._lock:
            self.errors[error.code.name] += 1
            self.errors_by_op[f"{kind}:{error.code.name}"] += 1

    def hang(self, kind: str) -> None:
        with self._lock:
            self.hangs += 1
            self.samples.append(f"{kind}: no result within {HANG_S:.0f} s")

    def opened(self) -> None:
        with self._lock:
            self.sessions_opened += 1

    def compare(self, equal: bool, what: str, completion) -> None:
        with self._lock:
            self.compared += 1
            self.prompt_tokens += completion.prompt_tokens
            self.prefilled_tokens += completion.prefilled_tokens
            if not equal:
                self.mismatches += 1
                if len(self.samples) < 20:
                    self.samples.append(what)

    def begin(self, index: int, kind: str) -> None:
        self._running[index] = (time.monotonic(), kind)

    def end(self, index: int) -> None:
        self._running[index] = None

    def watch(self, hang_s: float) -> None:
        """Count an operation running past ``hang_s`` as a hang (once)."""
        now = time.monotonic()
        for index, running in enumerate(list(self._running)):
            if running is not None and now - running[0] > hang_s \
                    and (index, running[0]) not in self._flagged:
                self._flagged.add((index, running[0]))
                self.hang(running[1])

    def report(self) -> dict:
        with self._lock:
            return {"ops": dict(self.ops), "errors": dict(self.errors),
                    "errors_by_op": dict(self.errors_by_op), "compared": self.compared,
                    "mismatches": self.mismatches, "hangs": self.hangs,
                    "prompt_tokens": self.prompt_tokens,
                    "prefilled_tokens": self.prefilled_tokens,
                    "sessions_opened": self.sessions_opened, "samples": self.samples}


class Conversations:
    """Seeded scripts (chat or completion, 1-3 user turns) and each one's replies when it runs
    alone on each model: what every soak reply must equal."""

    def __init__(self, paths: list[str], config: dict, count: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.scripts = [(rng.choice(("chat", "complete")),
                         tuple(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
                               for _ in range(rng.randint(1, 3))),
                         rng.choice((4, 8, 12))) for _ in range(count)]
        self.alone: dict[tuple[str, int], list[str]] = {}
        with Backend(config) as backend:
            for path in paths:
                graph = backend.load(path)
                for index in range(count):
                    with graph.session() as session:
                        replies: list[str] = []
                        for turn in range(len(self.scripts[index][1])):
                            replies.append(self.send(session, index, turn, replies).result().text)
                        self.alone[(path, index)] = replies
                graph.close()

    def send(self, session, index: int, turn: int, replies: list[str]):
        """Turn ``turn`` of script ``index`` on ``session`` (its replies so far given)."""
        mode, messages, max_tokens = self.scripts[index]
        params = {**GREEDY, "max_tokens": max_tokens}
        if mode == "chat":
            return session.chat_stream(messages[turn], params)
        prompt = "".join(m + r for m, r in zip(messages, replies)) + messages[turn]
        return session.complete_stream(prompt, params)

    def turn(self, session, index: int, turn: int, replies: list[str], tally: Tally, *,
             pieces: bool = False) -> bool:
        """Send a turn, check its reply against the run alone; False when it was cut short."""
        stream = self.send(session, index, turn, replies)
        if pieces:
            text = []
            while True:
                try:
                    text.append(stream.get(timeout=HANG_S))
                except EndOfStream:
                    break
        return self.check(session, index, turn, stream.result(timeout=HANG_S), replies, tally,
                          pieces="".join(text) if pieces else None)

    def check(self, session, index: int, turn: int, completion, replies: list[str],
              tally: Tally, pieces: str | None = None) -> bool:
        """Compare a reply with the run alone; False when it was cut short."""
        if completion.code is not ErrorCode.SUCCESS \
                or completion.finish_reason not in (FinishReason.STOP, FinishReason.LENGTH):
            return False
        expected = self.alone[(session.loaded.path, index)][turn]
        what = (f"script {index} turn {turn} on {session.loaded.path.rsplit('/', 1)[-1]}: "
                f"{completion.text!r} != alone {expected!r}")
        tally.compare(completion.text == expected and pieces in (None, expected), what,
                      completion)
        replies.append(completion.text)
        return True

    def whole(self, session, index: int, tally: Tally, *, pieces: bool = False,
              replies: list[str] | None = None) -> None:
        """The conversation's turns from the first without a reply in ``replies``."""
        replies = [] if replies is None else replies
        for turn in range(len(replies), len(self.scripts[index][1])):
            if not self.turn(session, index, turn, replies, tally, pieces=pieces):
                return

    def one(self, graph, rng: random.Random, held: list, tally: Tally, index: int) -> None:
        """One operation, picked at random; errors and hangs go to ``tally``."""
        kind = rng.choices(list(OPS), weights=list(OPS.values()))[0]
        script = rng.randrange(len(self.scripts))
        tally.begin(index, kind)
        try:
            getattr(self, f"_{kind}")(graph, rng, held, tally, script)
            tally.op(kind)
        except WasiNnError as error:
            tally.error(kind, error)
        except TimeoutError:
            tally.hang(kind)
        finally:
            tally.end(index)

    def _open(self, graph, tally: Tally):
        session = graph.session()
        tally.opened()
        return session

    def _conversation(self, graph, rng, held, tally, script) -> None:
        with self._open(graph, tally) as session:
            self.whole(session, script, tally)

    def _stream(self, graph, rng, held, tally, script) -> None:
        with self._open(graph, tally) as session:
            self.whole(session, script, tally, pieces=True)

    def _resume(self, graph, rng, held, tally, script) -> None:
        """Continue a held conversation (its session was likely swapped out meanwhile), or
        start one and hold it."""
        if len(held) < HELD and (not held or rng.random() < 0.3):
            held.append((self._open(graph, tally), script, []))
        entry = held[rng.randrange(len(held))]
        session, index, replies = entry
        try:
            done = not self.turn(session, index, len(replies), replies, tally) \
                or len(replies) == len(self.scripts[index][1])
        except (WasiNnError, TimeoutError):
            done = True
            raise
        finally:
            if done:
                held.remove(entry)
                session.close()

    def _cancel(self, graph, rng, held, tally, script) -> None:
        """Cancel a reply after its first piece, then run the whole conversation on the same
        session: what the cut reply left in the KV cache must not change the replies."""
        with self._open(graph, tally) as session:
            stream = self.send(session, script, 0, [])
            try:
                stream.get(timeout=HANG_S)
            except EndOfStream:
                pass
            stream.cancel()
            # Done before the cancel came: a turn of the history; cut short: sent again.
            replies: list[str] = []
            self.check(session, script, 0, stream.result(timeout=HANG_S), replies, tally)
            self.whole(session, script, tally, replies=replies)

    def _close(self, graph, rng, held, tally, script) -> None:
        """Close a session while its reply is generating."""
        session = self._open(graph, tally)
        stream = self.send(session, script, 0, [])
        if rng.random() < 0.5:
            try:
                stream.get(timeout=HANG_S)
            except EndOfStream:
                pass
        session.close()
        stream.result(timeout=HANG_S)  # a Completion (cancelled or done), or not_found
