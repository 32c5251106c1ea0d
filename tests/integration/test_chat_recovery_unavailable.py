"""A chat recovery asked while the server's Redis is away: no chat without a Position.

PROTOCOL.md section 7: with ``chat_epoch``/``chat_offset`` "the first chat
envelope the client gets is ``Position``", and a gap is never left to guess.
The server used to answer ``unavailable`` and then hand over live chat with no
position (reported from the client branch); it now closes with 1013 (try
again). Either a ``Position`` first, or the close before any chat message,
keeps the contract; the client library reconnects on both.
"""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed

from ..support import (
    DEADLINE,
    CutProxy,
    RedisProcess,
    open_client,
    open_server,
    settings_for,
    wait_until,
)


async def test_no_chat_without_position_when_redis_was_away(redis_server: RedisProcess) -> None:
    async with (
        CutProxy(redis_server.port).running() as proxy,
        open_server(settings_for("cut", proxy.url)) as cut,
        open_server(settings_for("other", redis_server.url)) as other,
    ):
        await wait_until(lambda: cut.app.hub.status().ready and other.app.hub.status().ready)
        async with open_client(other.ws) as talker:
            await talker.send("chat", "SubmitMessage", "before")
            first = await talker.expect("NewMessageReceived")
            proxy.cut()
            await wait_until(lambda: not cut.app.hub.status().connected)
            url = f"{cut.ws}?chat_epoch={first['epoch']}&chat_offset={first['offset']}"
            chat: list[str] = []
            closed_with: int | None = None
            try:
                async with open_client(url) as recovering:
                    proxy.restore()
                    await wait_until(lambda: cut.app.hub.status().ready)
                    await talker.send("chat", "SubmitMessage", "after")
                    with trio.fail_after(DEADLINE):
                        while "NewMessageReceived" not in chat:
                            envelope = await recovering.receive()
                            if envelope["channel"] == "chat":
                                chat.append(envelope["message"]["type"])
            except ConnectionClosed as exc:
                closed_with = exc.reason.code if exc.reason is not None else None
            assert (chat and chat[0] == "Position") or (not chat and closed_with == 1013), (
                chat,
                closed_with,
            )
