"""The client's token handling against a scripted websocket peer (real sockets).

The server on main has no authentication yet, so a small trio-websocket server
plays its part of PROTOCOL.md section 8: it records the ``Authorization`` header
of each handshake, sends ``Expiring``, expects ``Hello`` + ``Refresh`` with a new
token, then closes with 4001; the client must reconnect with a fresh token.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from wsproto_trio.client import Connected, Disconnected, Expiring, open_client

from ..support import DEADLINE


def envelope(channel: str, type_: str, contents: Any) -> str:
    return json.dumps({"channel": channel, "message": {"type": type_, "contents": contents}})


async def next_type(ws: WebSocketConnection) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(await ws.get_message())
    return value


async def test_tokens_are_asked_for_before_each_connection_and_on_expiring() -> None:
    headers: list[str] = []
    refreshed: list[str] = []
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(f"t{len(issued) + 1}")
        return issued[-1]

    async def handler(request: WebSocketRequest) -> None:
        found = dict(request.headers).get(b"authorization", b"").decode()
        headers.append(found)
        ws = await request.accept()
        await ws.send_message(envelope("chat", "Position", {"offset": 0, "epoch": "E"}))
        hello = await next_type(ws)
        assert hello["message"]["type"] == "Hello"
        welcome = {"user": f"u{len(headers)}", "server": "fake", "sub": "alice", "exp": 100}
        await ws.send_message(envelope("session", "Welcome", welcome))
        if len(headers) > 1:
            await trio.sleep_forever()
        await ws.send_message(envelope("session", "Expiring", {"exp": 100}))
        barrier, refresh = await next_type(ws), await next_type(ws)
        assert barrier["message"]["type"] == "Hello"
        assert refresh["message"]["type"] == "Refresh"
        refreshed.append(refresh["message"]["contents"]["token"])
        await ws.send_message(envelope("session", "Welcome", welcome))
        await ws.send_message(envelope("session", "Welcome", {**welcome, "exp": 200}))
        await ws.aclose(4001, "token expired")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        url = f"ws://127.0.0.1:{server.port}/websockets"
        async with open_client(url, token=fresh_token, batched=False) as client:
            assert client.user == "u1"
            seen: list[Any] = []
            with trio.fail_after(DEADLINE):
                async for event in client:
                    seen.append(event)
                    if isinstance(event, Connected) and event.reconnect:
                        break
            kinds = [type(e) for e in seen]
            assert Expiring in kinds
            closes = [e for e in seen if isinstance(e, Disconnected)]
            assert [c.code for c in closes] == [4001]
            assert client.user == "u2"
        nursery.cancel_scope.cancel()
    assert headers == ["Bearer t1", "Bearer t3"]
    assert refreshed == ["t2"]
