"""Every error code and close code of PROTOCOL.md section 5, on a live server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from wsproto_trio.config import RateLimit

from ..support import RedisProcess, open_client, open_server, settings_for, wait_until


def envelope(channel: Any, kind: Any, contents: Any = None) -> str:
    return json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})


BAD_FRAMES = [
    ("not json", "invalid_json"),
    ("{", "invalid_json"),
    ("[" * 60000, "invalid_json"),
    ("1" * 5000, "invalid_json"),
    ("[]", "invalid_message"),
    ('"text"', "invalid_message"),
    ('{"channel": "chat"}', "invalid_message"),
    ('{"channel": 5, "message": {"type": "SubmitMessage"}}', "invalid_message"),
    ('{"channel": "chat", "message": []}', "invalid_message"),
    ('{"channel": "chat", "message": {"type": 1}}', "invalid_message"),
    (envelope("chat", "SubmitMessage", ""), "invalid_message"),
    (envelope("chat", "SubmitMessage", 42), "invalid_message"),
    ('{"channel":"chat","message":{"type":"SubmitMessage","contents":"\\ud800"}}',
     "invalid_message"),
    (envelope("chat-room", "JoinRoom", "lobby"), "invalid_message"),
    (envelope("chat-room", "JoinRoom", {"room": 7}), "invalid_message"),
    (envelope("chat-room", "SendMessage", {"room": "r"}), "invalid_message"),
    (envelope("nope", "SubmitMessage", "x"), "unknown_channel"),
    (envelope("chat", "Shout", "x"), "unknown_type"),
    (envelope("chat-room", "Dance", {"room": "r"}), "unknown_type"),
    (envelope("ping", "Ping", 1), "unknown_type"),
    (envelope("chat-room", "JoinRoom", {"room": ""}), "invalid_room"),
    (envelope("chat-room", "JoinRoom", {"room": "x" * 101}), "invalid_room"),
    (envelope("chat-room", "JoinRoom", {"room": "a\u0000b"}), "invalid_room"),
    (envelope("chat-room", "JoinRoom", {"room": "tab\there"}), "invalid_room"),
    (envelope("chat-room", "SendMessage", {"room": "r", "message": "m"}), "not_joined"),
    (envelope("chat-room", "LeaveRoom", {"room": "r"}), "not_joined"),
]  # fmt: skip


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_its_error_and_the_connection_stays_usable(
    frame: str, code: str
) -> None:
    async with open_server(settings_for("e")) as server, open_client(server.ws) as client:
        await client.ws.send_message(frame)
        error = await client.receive()
        assert error["channel"] == "error"
        assert error["message"]["type"] == "Error"
        assert error["message"]["contents"]["code"] == code
        assert error["message"]["contents"]["detail"]
        await client.send("chat", "SubmitMessage", "still here")
        assert (await client.expect("NewMessageReceived"))["content"] == "still here"


async def test_already_joined_and_binary_frames() -> None:
    async with open_server(settings_for("e")) as server, open_client(server.ws) as client:
        await client.join("r")
        await client.expect("JoinedRoom")
        await client.send("chat-room", "JoinRoom", {"room": "r"})
        assert (await client.expect("Error"))["code"] == "already_joined"
        await client.ws.send_message(b"\x00\x01binary")
        assert (await client.expect("Error"))["code"] == "unsupported_frame"
        await client.send("chat-room", "SendMessage", {"room": "r", "message": "ok"})
        assert (await client.expect("NewMessage"))["message"] == "ok"


async def test_oversized_frame_closes_1009_and_others_are_untouched() -> None:
    settings = settings_for("e", max_message_bytes=1024)
    async with open_server(settings) as server, open_client(server.ws) as bystander:
        async with open_client(server.ws) as client:
            await client.ws.send_message("x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1009
        await bystander.send("chat", "SubmitMessage", "fine")
        assert (await bystander.expect("NewMessageReceived"))["content"] == "fine"


async def test_rate_limit_drops_then_closes_abusers_with_1008() -> None:
    settings = settings_for("e", rate_limit=RateLimit(rate=5.0, burst=5.0))
    async with open_server(settings) as server, open_client(server.ws) as client:
        # Hello took one token; four more pass, then messages are refused.
        frames = [envelope("chat", "SubmitMessage", f"m{i}") for i in range(4 + 3)]
        for frame in frames:
            await client.ws.send_message(frame)
        received = [await client.receive() for _ in range(7)]
        kinds = [e["message"]["type"] for e in received]
        assert kinds.count("NewMessageReceived") == 4
        assert [e["message"]["contents"]["code"] for e in received if e["channel"] == "error"] == [
            "rate_limited"
        ] * 3
        # Keep pushing: the refusal bucket (5 deep) empties and we are closed.
        # One frame per answer, so no unread data is in flight at the close.
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(50):
                await client.ws.send_message(frames[0])
                if (await client.expect("Error"))["code"] != "rate_limited":
                    break
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1008


async def test_unavailable_when_redis_is_down(redis_server: RedisProcess) -> None:
    async with open_server(settings_for("e", redis_server.url)) as server:
        await wait_until(lambda: server.app.hub.status().ready)
        async with open_client(server.ws) as client:
            redis_server.stop()
            await wait_until(lambda: not server.app.hub.status().connected)
            await client.send("chat", "SubmitMessage", "lost")
            assert (await client.expect("Error"))["code"] == "unavailable"
            await client.send("chat-room", "JoinRoom", {"room": "r"})
            assert (await client.expect("Error"))["code"] == "unavailable"
            # The failed join left no trace: joining again is not already_joined.
            redis_server.start()
            await wait_until(lambda: server.app.hub.status().ready)
            await client.send("chat-room", "JoinRoom", {"room": "r"})
            await client.send("chat", "SubmitMessage", "back")
            seen: dict[str, Any] = {}
            while "NewMessageReceived" not in seen:
                envelope = await client.receive()
                seen[envelope["message"]["type"]] = envelope["message"]["contents"]
            # Redis came back empty: the chat has a new epoch, and the client is
            # told before the first message of it.
            assert seen["Lost"]["offset"] == 0
            assert seen["NewMessageReceived"]["content"] == "back"
            assert seen["NewMessageReceived"]["epoch"] == seen["Lost"]["epoch"]
            assert seen["MemberList"]["users"] == [client.user]


async def test_hostile_frames_from_many_clients_do_not_hurt_the_server() -> None:
    hostile = [frame for frame, _ in BAD_FRAMES] + [
        '{"channel":"chat","message":{"type":"SubmitMessage","contents":' + "[" * 500 + "]" * 500
        + "}}",
        '{"a":' * 3000 + "1" + "}" * 3000,
        "\u0000\u0001\u0002",
        "\U0001f600" * 100,
        json.dumps({"channel": "chat-room", "message": {"type": "JoinRoom", "contents": None}}),
    ]  # fmt: skip
    async with open_server(settings_for("e")) as server:

        async def attacker() -> None:
            async with open_client(server.ws) as client:
                for frame in hostile:
                    await client.ws.send_message(frame)
                for _ in hostile:
                    assert (await client.receive())["channel"] == "error"

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(attacker)
        async with open_client(server.ws) as fresh:
            await fresh.send("chat", "SubmitMessage", "alive")
            assert (await fresh.expect("NewMessageReceived"))["content"] == "alive"
        await wait_until(lambda: not server.app.hub.connections)
