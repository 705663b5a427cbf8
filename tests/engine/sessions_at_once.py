"""Sessions started together on one graph (engine tests of what batching must not change)."""
from __future__ import annotations

import threading

# no request deadline: on a loaded machine a generation may take longer than the default 30 s,
# and the tests using it are about what is generated, not when
NO_DEADLINE = {"backend": {"default_task_timeout_ms": 0}}


def run_at_once(graph, prompts: list[str], asks: list[dict], *, stream: bool = False) -> list:
    """Every prompt on a session of its own, all released at once with its ``asks``; each
    request's Completion, or (pieces, Completion) when ``stream``."""
    results: list = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        with graph.session() as session:
            start.wait(30)
            if stream:
                reply = session.complete_stream(prompts[i], **asks[i])
                results[i] = (list(reply), reply.result())
            else:
                results[i] = session.complete(prompts[i], **asks[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results
