"""One connection's publications are pipelined (docs/protocol.md section 4).

The reader hands a publication to the broker and goes on without waiting for its
round trip; what must still hold: a burst from one client reaches every recipient
complete, once, in the order sent, with consecutive offsets, and each publication
the broker refuses gets its own ``unavailable``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from wsproto_trio.core import messages

from ..support import RedisProcess, open_client, open_cluster, wait_until

BURST = 150  # more than the connection's publish window (64)
ROOM = "burst"


async def collect(client: Any, kinds: set[str], count: int) -> dict[str, list[dict[str, Any]]]:
    """The contents of the next ``count`` envelopes of the ``kinds``, by kind; others skipped."""
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with trio.fail_after(20):
        while sum(map(len, found.values())) < count:
            envelope = await client.receive()
            kind = envelope["message"]["type"]
            if kind in found:
                found[kind].append(envelope["message"]["contents"])
    return found


def envelope(channel: str, kind: str, contents: Any) -> str:
    return json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})


@pytest.mark.parametrize("batched", [False, True], ids=["one-per-frame", "ndjson"])
async def test_a_burst_arrives_complete_and_in_order_on_every_server(
    redis_server: RedisProcess, batched: bool
) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws, batched=batched) as a, open_client(s1.ws) as b:
            await a.join(ROOM)
            await b.join(ROOM)
            chat = [envelope("chat", "SubmitMessage", f"c{i}") for i in range(BURST)]
            room = [
                envelope("chat-room", "SendMessage", {"room": ROOM, "message": f"r{i}"})
                for i in range(BURST)
            ]
            burst = [part for pair in zip(chat, room, strict=True) for part in pair]
            if batched:
                await a.ws.send_message("\n".join(burst))  # one frame, 300 envelopes
            else:
                for text in burst:  # back to back, nothing read in between
                    await a.ws.send_message(text)
            for client in (a, b):
                got = await collect(client, {"NewMessageReceived", "NewMessage"}, 2 * BURST)
                chat_in = got["NewMessageReceived"]
                assert [m["content"] for m in chat_in] == [f"c{i}" for i in range(BURST)]
                offsets = [m["offset"] for m in chat_in]
                assert offsets == list(range(offsets[0], offsets[0] + BURST))
                room_in = got["NewMessage"]
                assert [m["message"] for m in room_in] == [f"r{i}" for i in range(BURST)]
                assert [m["offset"] for m in room_in] == list(range(1, BURST + 1))


async def test_each_refused_publication_of_a_burst_gets_unavailable(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 1) as (server,):
        async with open_client(server.ws) as a:
            redis_server.stop()
            await wait_until(lambda: not server.app.hub.status().connected)
            for i in range(3):
                await a.send(messages.CHAT_CHANNEL, "SubmitMessage", f"lost {i}")
            errors = (await collect(a, {"Error"}, 3))["Error"]
            assert [e["code"] for e in errors] == ["unavailable"] * 3, errors
            await a.send("session", "Hello")
            assert (await a.expect("Welcome"))["user"] == a.user  # still open and served
            redis_server.start()


async def test_a_leave_waits_for_the_publications_before_it(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 1) as (server,):
        async with open_client(server.ws) as a:
            await a.join(ROOM)
            sends = [
                envelope("chat-room", "SendMessage", {"room": ROOM, "message": f"r{i}"})
                for i in range(20)
            ]
            for text in [*sends, envelope("chat-room", "LeaveRoom", {"room": ROOM})]:
                await a.ws.send_message(text)
            got = await collect(a, {"NewMessage", "LeftRoom"}, 21)
            assert [m["message"] for m in got["NewMessage"]] == [f"r{i}" for i in range(20)]
            assert len(got["LeftRoom"]) == 1
