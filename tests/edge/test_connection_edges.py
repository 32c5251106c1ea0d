"""Connection behaviour at the edges, on virtual time (``autojump_clock``).

The real app under Hypercorn's ``TCPServer`` (``harness``), driven frame by
frame: what a client sees on the wire when it is slow, abusive, silent, too
slow to handshake, or connected to a server that stops. Every case takes
milliseconds of real time, whatever its virtual duration.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection, TextMessage

from wsproto_trio.broker.memory import MemoryNetwork
from wsproto_trio.cli import dead_client_timeout
from wsproto_trio.config import RateLimit, Settings

from .harness import DEADLINE, Wire, close_frame, open_edge_server


def settings(server_id: str = "edge", **changes: object) -> Settings:
    return Settings(server_id=server_id, host="127.0.0.1", port=0).with_changes(**changes)


async def test_slow_consumer_is_closed_1013_and_the_others_carry_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that stops reading overflows its queue: 1013 for it, nothing for the rest."""
    async with open_edge_server(settings(send_queue_size=8, rate_limit=RateLimit(0, 0))) as server:
        slow = await server.connect("slow")
        fast = await server.connect("fast")
        # "slow" reads nothing from here on; its bytes pile up unread, and
        # Hypercorn's writes to it are what a full socket buffer makes them.
        text = "x" * 2000
        for n in range(64):  # 128 kB, far over a socket buffer and 8 queued
            await fast.send("chat", "SubmitMessage", f"{n} {text}")
            assert (await fast.next_of("NewMessageReceived"))["content"] == f"{n} {text}"
        assert await slow.close_code() == 1013
        await fast.send("chat", "SubmitMessage", "after")
        assert (await fast.next_of("NewMessageReceived"))["content"] == "after"


async def test_rate_limit_abuse_is_closed_1008_before_the_room_hears_it_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over the limit: ``rate_limited`` errors, then 1008; the close frame goes out
    before ``LeftRoom`` reaches the other member."""
    wire = Wire()
    async with open_edge_server(settings(rate_limit=RateLimit(10, 5)), wire) as server:
        abuser = await server.connect("abuser")
        member = await server.connect("member")
        await abuser.join("r")
        await member.join("r")
        for _ in range(20):
            await abuser.send("session", "Hello")
        codes = []
        while isinstance(event := await abuser.next_event(), TextMessage):
            codes.append(event.data)
        assert any("rate_limited" in text for text in codes), codes
        assert isinstance(event, CloseConnection) and event.code == 1008, event
        assert await member.next_of("LeftRoom") == {"room": "r", "user": abuser.user}
        assert wire.first("abuser", close_frame(1008)) < wire.first("member", b'"LeftRoom"')


async def test_a_silent_client_is_dropped_by_the_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No pong, no bytes: dropped after ``dead_client_timeout``; one that answers stays."""
    config = settings(heartbeat_interval=1.0)
    async with open_edge_server(config, heartbeat=True) as server:
        silent = await server.connect("silent")
        member = await server.connect("member")
        await silent.join("r")
        await member.join("r")
        silent.answer_pings = False
        began = trio.current_time()
        # "member" reads (and so answers pings) all along; "silent" does not.
        assert await member.next_of("LeftRoom") == {"room": "r", "user": silent.user}
        dropped_after = trio.current_time() - began
        assert dead_client_timeout(config) <= dropped_after <= dead_client_timeout(config) + 1.5
        await member.send("chat", "SubmitMessage", "still here")
        assert (await member.next_of("NewMessageReceived"))["content"] == "still here"


@pytest.mark.parametrize("sent", [b"", b"GET /websockets HTTP/1.1\r\nHost: ed"])
async def test_a_client_that_does_not_finish_its_handshake_is_closed(
    autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    """Silent, or trickling its request head: closed after ``HANDSHAKE_TIMEOUT``."""
    async with open_edge_server(settings(handshake_timeout=3.0)) as server:
        client = server.open_stream("lazy")
        if sent:
            await client.stream.send_all(sent)
        began = trio.current_time()
        with trio.fail_after(DEADLINE):
            assert await client.stream.receive_some(1024) == b""
        assert 3.0 <= trio.current_time() - began <= 3.5


async def test_drain_closes_1001_then_tells_the_other_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stopping server: 1001 at once, and the other server's member hears
    ``LeftRoom`` only after the close frame went out."""
    wire = Wire()
    network = MemoryNetwork()
    async with (
        open_edge_server(settings("survivor"), wire, network) as survivor,
        open_edge_server(settings("doomed"), wire, network) as doomed,
    ):
        leaving = [await doomed.connect(f"doomed-{n}") for n in range(3)]
        member = await survivor.connect("member")
        await member.join("r")
        for client in leaving:
            await client.join("r")
            await member.next_of("JoinedRoom")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed.shut_down)
            began = trio.current_time()
            for client in leaving:
                assert await client.close_code() == 1001
            assert trio.current_time() - began < 1.0
        left = {(await member.next_of("LeftRoom"))["user"] for _ in leaving}
        assert left == {client.user for client in leaving}
        for client in leaving:
            assert wire.first(client.name, close_frame(1001)) < wire.first("member", b'"LeftRoom"')


async def test_a_handshake_over_max_connections_is_refused_with_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_edge_server(settings(max_connections=1)) as server:
        holder = await server.connect("holder")
        assert await server.refused_status("late") == 503
        await holder.send("chat", "SubmitMessage", "unaffected")
        assert (await holder.next_of("NewMessageReceived"))["content"] == "unaffected"
