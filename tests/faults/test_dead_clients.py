"""Issue 3 item 4: a client that vanishes without a close frame is found and removed.

The client is a real process (trio-websocket) that joins a room and is then
stopped with SIGSTOP: its kernel keeps ACKing TCP, but nothing in it answers the
server's websocket pings. ``wsproto-trio serve`` pings every
``HEARTBEAT_INTERVAL`` and drops a connection silent for
``cli.dead_client_timeout`` (2 intervals, whole seconds); the other members
receive ``LeftRoom``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from ..procs import collect, figure, kill_group, next_of, spawn_server
from ..support import open_client

HEARTBEAT = 0.5
DEAD_AFTER = max(1, math.ceil(2 * HEARTBEAT))  # cli.dead_client_timeout
ROOM = "heartbeat"

CLIENT_SCRIPT = """
import json, sys, trio
from trio_websocket import open_websocket_url

async def main(url, room):
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps(
            {"channel": "chat-room", "message": {"type": "JoinRoom", "contents": {"room": room}}}))
        while True:
            envelope = json.loads(await ws.get_message())
            if envelope["message"]["type"] == "JoinedRoom":
                print(envelope["message"]["contents"]["user"], flush=True)
                break
        while True:  # keep reading (and so answering pings) until stopped
            await ws.get_message()

trio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_stopped_client_is_removed_with_left_room(tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    async with spawn_server(tmp_path, "hb-server", HEARTBEAT_INTERVAL=f"{HEARTBEAT}s") as server:
        await server.wait_ready()
        async with open_client(server.ws) as b:
            await b.join(ROOM)
            await next_of(b, "JoinedRoom", 5)
            process = await trio.lowlevel.open_process(
                [sys.executable, str(script), server.ws, ROOM],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                assert process.stdout is not None
                line = b""
                with trio.fail_after(15):
                    while not line.endswith(b"\n"):
                        chunk = await process.stdout.receive_some(1024)
                        assert chunk, "client exited before joining"
                        line += chunk
                user = line.decode().strip()
                assert (await next_of(b, "JoinedRoom", 5))["user"] == user
                # Alive and idle for longer than the timeout: not dropped,
                # because it answers pings.
                quiet = await collect(b, DEAD_AFTER + 1.0)
                assert not [e for e in quiet if e["message"]["type"] == "LeftRoom"], quiet

                os.kill(process.pid, signal.SIGSTOP)
                began = time.monotonic()
                left = await next_of(b, "LeftRoom", DEAD_AFTER + 3)
                detected = time.monotonic() - began
                figure("dead_client_detect_s", detected)
                assert left == {"room": ROOM, "user": user}
                assert detected < DEAD_AFTER + 2, detected
                # b itself, idle but answering pings, is still connected.
                await b.send("chat", "SubmitMessage", "still here")
                assert (await next_of(b, "NewMessageReceived", 5))["content"] == "still here"
                status, body = await server.get("/healthz")
                assert status == 200 and body["connections"] == 1, body
            finally:
                await kill_group(process)
