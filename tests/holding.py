"""hold_engine: requests submitted while it holds all reach the same planning step."""
from __future__ import annotations

import threading


def hold_engine(engine):
    """Keep the engine thread inside a command until the returned event is set: requests
    submitted meanwhile all reach the same planning step."""
    entered, release = threading.Event(), threading.Event()

    def hold():
        entered.set()
        release.wait(30)
    engine.call(hold)
    assert entered.wait(30)
    return release
