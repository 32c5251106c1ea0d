"""Thousands of hostile frames from many clients at once against a server process.

Random bytes (as binary frames), random text, invalid UTF-8 smuggled through
escapes, deep nesting, huge numbers, wrong types, mutated valid envelopes and
oversized frames. Afterwards the server still serves a fresh client, and its log
has no traceback and nothing at ERROR.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from ..procs import figure, spawn_server
from ..support import open_client

CLIENTS = 20
FRAMES_PER_CLIENT = 200
MAX_BYTES = 4096

VALID = [
    {"channel": "chat", "message": {"type": "SubmitMessage", "contents": "hi"}},
    {"channel": "chat-room", "message": {"type": "JoinRoom", "contents": {"room": "fz"}}},
    {"channel": "chat-room", "message": {"type": "SendMessage",
                                          "contents": {"room": "fz", "message": "m"}}},
    {"channel": "chat-room", "message": {"type": "LeaveRoom", "contents": {"room": "fz"}}},
    {"channel": "session", "message": {"type": "Hello"}},
]  # fmt: skip
WEIRD_VALUES: list[object] = [
    None, True, 0, -1, 10**30, 1e308, "", "x" * 300, [], {}, [[[]]], {"room": None},
    "\u0000", "\u202e", "\U0001f600", {"room": "\x7f"}, {"room": "a" * 101},
]  # fmt: skip


def mutate(rng: random.Random) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(json.dumps(rng.choice(VALID)))
    target = rng.choice(["channel", "message", "type", "contents", "extra", "room"])
    value = rng.choice(WEIRD_VALUES)
    if target in ("channel", "message", "extra"):
        envelope[target] = value
    elif target in ("type", "contents"):
        envelope["message"][target] = value
    else:
        envelope["message"]["contents"] = {"room": value, "message": value}
    return envelope


def hostile_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(1, 80)))
    if kind == 2:
        return (
            '{"channel":"chat","message":{"type":"SubmitMessage",'
            '"contents":"\\ud800\\udfff\\ud800"}}'
        )
    if kind == 3:
        depth = rng.randrange(100, 1500)
        return "[" * depth + "]" * depth
    if kind == 4:
        return '{"channel":"chat","message":{"type":"SubmitMessage","contents":' + "9" * 3000 + "}}"
    if kind == 5:
        return json.dumps(mutate(rng))
    if kind == 6:
        text = json.dumps(rng.choice(VALID))
        cut = rng.randrange(len(text))
        return text[:cut] + rng.choice(["", "}", "\x00", "NaN", "]]]", '"'])
    if kind == 7:
        return json.dumps(
            {
                "channel": "chat",
                "message": {"type": "SubmitMessage", "contents": "z" * (MAX_BYTES + 10)},
            }
        )
    return json.dumps(rng.choice(VALID))


async def attack(port: int, frames: list[str | bytes], index: int) -> int:
    """Send ``frames[index:]`` on one raw connection (wsproto over a trio socket),
    reading whatever comes back, until done or closed; returns the next index.

    A raw client rather than trio-websocket, whose teardown can hang once the
    server has closed with 1009 while frames were still in flight.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target="/websockets")))
        closed = False
        welcomed = False

        async def pump() -> None:
            nonlocal closed, welcomed
            data = await stream.receive_some(65536)
            if not data:
                closed = True
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    closed = True  # we just drop the socket; the server sees EOF
                elif isinstance(event, TextMessage) and '"Welcome"' in event.data:
                    welcomed = True
                elif isinstance(event, RejectConnection):
                    raise AssertionError("handshake refused")

        while ws.state is not ConnectionState.OPEN:
            await pump()
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                while not closed:
                    await pump()
                nursery.cancel_scope.cancel()

            nursery.start_soon(reader)
            try:
                while index < len(frames):
                    frame = frames[index]
                    message = TextMessage(frame) if isinstance(frame, str) else BytesMessage(frame)
                    await stream.send_all(ws.send(message))
                    index += 1
                await stream.send_all(ws.send(TextMessage(json.dumps(VALID[4]))))
                while not welcomed and not closed:
                    await trio.sleep(0.01)  # poll the reader's flag; bounded by fail_after
            except (trio.BrokenResourceError, LocalProtocolError):
                pass  # the server closed first (1009): the caller reconnects
            nursery.cancel_scope.cancel()
    return index


async def test_live_fuzz_leaves_the_server_healthy_and_quiet(tmp_path: Path) -> None:
    sent = 0
    async with spawn_server(
        tmp_path, "fuzz", MAX_MESSAGE_BYTES=str(MAX_BYTES), RATE_LIMIT="off", LOG_LEVEL="INFO"
    ) as server:
        await server.wait_ready()

        async def attacker(seed: int) -> None:
            nonlocal sent
            rng = random.Random(seed)
            frames = [hostile_frame(rng) for _ in range(FRAMES_PER_CLIENT)]
            index = 0
            while index < len(frames):
                # An oversized frame closes the connection (1009): reconnect and go on.
                with trio.fail_after(60):
                    index = await attack(server.port, frames, index)
            sent += len(frames)

        async with trio.open_nursery() as nursery:
            for seed in range(CLIENTS):
                nursery.start_soon(attacker, seed)

        async with open_client(server.ws) as fresh:
            await fresh.send("chat", "SubmitMessage", "still serving")
            while (await fresh.expect("NewMessageReceived"))["content"] != "still serving":
                pass
        log = server.log()
    figure("fuzz_frames_sent", sent)
    assert sent == CLIENTS * FRAMES_PER_CLIENT
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 300) :][:4000]
    assert " ERROR " not in log and "[ERROR]" not in log
