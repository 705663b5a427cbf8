"""Many clients at once, clients that leave, and conversations that collide: 64 concurrent
streams give what the same requests give one at a time; a client that disconnects stops its
generation; a second request on a busy pinned conversation is a 429 with Retry-After."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

CLIENTS = 64
GREEDY = {"temperature": 0, "max_tokens": 12}
# generates until cancelled: no end-of-generation, no token limit, context shifting on
ENDLESS = {"temperature": 0, "max_tokens": -1, "ignore_eos": True}
DEADLINE_S = 30.0


def _prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Client number {i} asks about topic {i * 7 % 13}"}]


def test_64_concurrent_streams_equal_the_same_requests_one_at_a_time(client, async_client):
    alone = [client.chat.completions.create(model="tiny", messages=_prompt(i), **GREEDY)
             .choices[0].message.content for i in range(CLIENTS)]

    async def one(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model="tiny", messages=_prompt(i), stream=True, **GREEDY)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream
                        if chunk.choices])

    async def everyone() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    together = asyncio.run(everyone())
    assert together == alone


def _poll(check, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.02)


class Endless:
    """A streaming request that runs until cancelled (or its 30 s deadline), its first chunk
    read. The line iterator is kept: dropping it would close the response."""

    def __init__(self, server, **extra) -> None:
        self.http = httpx.Client(timeout=30)
        request = self.http.build_request(
            "POST", server.base_url + "/v1/chat/completions", headers=server.auth,
            json={"model": "tiny", "messages": [{"role": "user", "content": "go on forever"}],
                  "stream": True, **ENDLESS, **extra})
        self.response = self.http.send(request, stream=True)
        assert self.response.status_code == 200
        self.lines = self.response.iter_lines()
        assert next(line for line in self.lines if line.startswith("data: "))

    def more(self) -> str:
        return next(line for line in self.lines if line.startswith("data: "))

    def close(self) -> None:
        self.response.close()
        self.http.close()


def test_a_client_that_disconnects_cancels_its_generation(server):
    before = server.stats()
    endless = Endless(server)
    endless.more()   # still running
    assert server.stats()["cancelled"] == before["cancelled"]
    endless.close()
    _poll(lambda: server.stats()["cancelled"] > before["cancelled"], "the server saw it leave")
    _poll(lambda: server.stats()["backend"]["sessions_active"] == 0, "the request stopped")
    engine = server.stats()["backend"]["engines"]["1"]
    assert engine["cancelled"] > before["backend"]["engines"]["1"]["cancelled"]


def test_a_busy_pinned_conversation_is_429_with_retry_after(server):
    endless = Endless(server, user="held")
    try:
        second = httpx.post(server.base_url + "/v1/chat/completions", headers=server.auth,
                            json={"model": "tiny", "user": "held", **GREEDY,
                                  "messages": [{"role": "user", "content": "me too"}]})
        assert second.status_code == 429
        assert second.headers["retry-after"] == "1"
        assert second.json()["error"]["code"] == "conversation_busy"
        endless.more()   # the first one runs on
    finally:
        endless.close()
    _poll(lambda: server.stats()["backend"]["sessions_active"] == 0, "the first one stopped")


def test_a_plain_request_whose_client_leaves_is_cancelled(server):
    before = server.stats()
    with pytest.raises(httpx.ReadTimeout):   # the client gives up; the request runs 30 s
        httpx.post(server.base_url + "/v1/completions", headers=server.auth,
                   timeout=httpx.Timeout(30.0, read=0.5),   # only the wait for the reply
                   json={"model": "tiny", "prompt": "go on", **ENDLESS})
    _poll(lambda: server.stats()["cancelled"] > before["cancelled"], "the server saw it leave")
    _poll(lambda: server.stats()["backend"]["sessions_active"] == 0, "the request stopped")
