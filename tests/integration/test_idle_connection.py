"""An idle connection holds no send queue and no writer task until its first envelope.

That is what makes it cheap (docs/performance.md); what must hold is that the
first envelope, whenever it comes and from whichever task, still gets there.
"""

from __future__ import annotations

import json

from trio_websocket import open_websocket_url

from wsproto_trio.server.connection import Connection

from ..support import open_server, settings_for, wait_until


async def test_the_writer_starts_with_the_first_envelope() -> None:
    async with open_server(settings_for("idle")) as server:
        hub = server.app.hub
        async with open_websocket_url(server.ws) as ws:
            await wait_until(lambda: len(hub.connections) == 1)
            (recipient,) = hub.connections.values()
            assert isinstance(recipient, Connection)
            connection = recipient
            assert connection._out is None  # idle: nothing allocated for sending
            assert (await server.get("/ping1"))[0] == 200  # offered by the hub's task
            envelope = json.loads(await ws.get_message())
            assert envelope["message"] == {"type": "Ping", "contents": 1}
            assert connection._out is not None
            await ws.send_message(json.dumps({"channel": "session", "message": {"type": "Hello"}}))
            welcome = json.loads(await ws.get_message())
            assert welcome["message"]["contents"]["user"] == connection.id
