"""A client that never reads is closed with 1013; everyone else gets everything."""

from __future__ import annotations

import base64
import os
import socket

import trio

from ..support import open_client, open_server, settings_for, wait_until


async def open_stuck_client(port: int) -> trio.SocketStream:
    """A raw websocket client that completes the handshake and then never reads."""
    sock = trio.socket.socket()
    # A tiny receive buffer makes the server's send side fill up quickly.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            f"GET /websockets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return stream


async def test_stuck_client_is_closed_1013_and_others_receive_everything() -> None:
    settings = settings_for("slow", send_queue_size=64, send_queue_bytes=256 * 1024)
    async with open_server(settings) as server:
        port = int(server.http.rsplit(":", 1)[1])
        async with open_client(server.ws) as sender, open_client(server.ws) as reader:
            stuck = await open_stuck_client(port)
            await wait_until(lambda: len(server.app.hub.connections) == 3)
            count = 600
            payload = "y" * 4000
            received = 0

            async def read_all() -> None:
                nonlocal received
                for _ in range(count):
                    envelope = await reader.receive()
                    assert envelope["message"]["type"] == "NewMessageReceived", envelope
                    received += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                for i in range(count):
                    await sender.send("chat", "SubmitMessage", f"{i} {payload}")
                    await sender.expect("NewMessageReceived")
            assert received == count
            await wait_until(lambda: len(server.app.hub.connections) == 2)
            assert server.app.hub.metrics.slow_consumer_closes._value.get() == 1
            await stuck.aclose()
