"""The Erlang port's bounds (adapters/erlang/workers.py): a pool of a few threads with a
bounded queue, and the byte budget of requests not started; both refuse with Busy."""
from __future__ import annotations

import threading

import pytest

from wasi_nn_backend.adapters.erlang.workers import HeldBytes, Workers
from wasi_nn_backend.errors import Busy


def pool_threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"erlang-{name}")


def test_a_full_queue_refuses_and_threads_stay_bounded():
    workers = Workers("bounded", threads=2, backlog=3)
    release, started, ended = threading.Event(), threading.Semaphore(0), threading.Semaphore(0)
    done: list[int] = []

    def task(n: int) -> None:
        started.release()
        release.wait(30)
        done.append(n)
        ended.release()

    try:
        for n in range(2):   # both threads busy
            workers.submit(lambda n=n: task(n))
        for _ in range(2):
            assert started.acquire(timeout=30)
        for n in range(2, 5):  # three wait
            workers.submit(lambda n=n: task(n))
        with pytest.raises(Busy, match="3 requests wait for one of its 2 bounded threads"):
            workers.submit(lambda: task(99))
        workers.submit(lambda: task(5), force=True)   # accepted earlier: never refused
        assert pool_threads("bounded") == 2
        release.set()
        for _ in range(6):
            assert ended.acquire(timeout=30)
    finally:
        release.set()
        workers.close()
    assert sorted(done) == [0, 1, 2, 3, 4, 5]   # 99 was refused


def test_a_thread_that_cannot_start_refuses_the_task(monkeypatch):
    workers = Workers("starved", threads=2, backlog=8)

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    ran = []
    with pytest.raises(Busy, match="cannot start a thread"):
        workers.submit(lambda: ran.append(1))
    monkeypatch.undo()
    finished = threading.Event()
    workers.submit(finished.set)   # a thread starts now; the refused task is gone
    assert finished.wait(30) and ran == []
    workers.close()


def test_held_bytes_take_one_request_of_any_size_and_refuse_past_the_limit():
    held = HeldBytes(100)
    held.take(500)          # nothing else held: one request is never refused
    with pytest.raises(Busy, match="hold 500 bytes"):
        held.take(1)
    held.give(500)
    held.take(60)
    with pytest.raises(Busy):
        held.holding(50, lambda: None)
    with pytest.raises(ValueError):   # refused by accept: the bytes come back
        held.holding(40, lambda: (_ for _ in ()).throw(ValueError("refused")))
    held.holding(40, lambda: None)


def test_a_quick_task_does_not_wait_behind_a_slow_one_for_the_idle_thread():
    """One idle thread, a slow task (a model load) then a quick one: the idle thread takes the
    slow one, so the quick one needs a thread of its own. The idle thread still counted as
    idle until it ran, and the quick task waited for the slow one to end."""
    workers = Workers("idle", threads=4, backlog=8)
    try:
        first = threading.Event()
        workers.submit(first.set)
        assert first.wait(5)
        for _ in range(500):   # until the thread is back waiting for work
            with workers._cond:
                if workers._idle == 1:
                    break
            threading.Event().wait(0.01)
        release, quick = threading.Event(), threading.Event()
        workers.submit(lambda: release.wait(10))
        workers.submit(quick.set)
        assert quick.wait(5), "the quick task waited for the slow one"
        release.set()
    finally:
        workers.close()
