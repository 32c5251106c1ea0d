"""Guards of issue 3 item 8: MAX_CONNECTIONS, ALLOWED_ORIGINS, stalled handshakes.

In-process servers built with the same Hypercorn configuration as
``wsproto-trio serve`` (``cli.hypercorn_config``); real sockets.
"""

from __future__ import annotations

import time

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from ..procs import figure
from ..support import open_client, open_server, settings_for

HANDSHAKE_TIMEOUT = 1.0


async def test_max_connections_rejects_with_503() -> None:
    async with open_server(settings_for("guard-max", max_connections=2)) as server:
        async with open_client(server.ws) as a, open_client(server.ws):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(server.ws, connect_timeout=5):
                    pass
            assert rejected.value.status_code == 503
            assert b"MAX_CONNECTIONS" in (rejected.value.body or b"")
            # The two admitted ones are unaffected.
            await a.send("chat", "SubmitMessage", "still here")
            assert (await a.expect("NewMessageReceived"))["content"] == "still here"
        # Room again once one has gone.
        async with open_client(server.ws) as c:
            assert c.user


async def test_allowed_origins() -> None:
    settings = settings_for("guard-origin", allowed_origins=("http://good",))
    async with open_server(settings) as server:
        for headers in ([(b"Origin", b"http://evil")], []):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(server.ws, extra_headers=headers, connect_timeout=5):
                    pass
            assert rejected.value.status_code == 403
        async with open_websocket_url(
            server.ws, extra_headers=[(b"Origin", b"http://good")], connect_timeout=5
        ) as ws:
            await ws.send_message('{"channel":"session","message":{"type":"Hello"}}')
            with trio.fail_after(5):
                assert "Welcome" in str(await ws.get_message())


async def _closed_by_server(stream: trio.SocketStream, deadline: float) -> float:
    """Seconds until the server closes ``stream`` (EOF or reset); fails after ``deadline``."""
    began = time.monotonic()
    with trio.fail_after(deadline):
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
    return time.monotonic() - began


@pytest.mark.parametrize("sends", [b"", b"GET /websockets HTTP/1.1\r\nHost: x\r\n"])
async def test_stalled_handshake_is_dropped_after_handshake_timeout(sends: bytes) -> None:
    """A silent TCP client, and one that stops half-way through its request."""
    settings = settings_for("guard-stall", handshake_timeout=HANDSHAKE_TIMEOUT)
    async with open_server(settings) as server:
        host, port = server.http.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            if sends:
                await stream.send_all(sends)
            took = await _closed_by_server(stream, HANDSHAKE_TIMEOUT + 2)
        figure(f"stalled_handshake_{'partial' if sends else 'silent'}_dropped_s", took)
        assert took >= HANDSHAKE_TIMEOUT * 0.9, took
        # The server itself is fine.
        async with open_client(server.ws) as client:
            assert client.user
