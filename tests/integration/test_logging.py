"""Logs: JSON lines naming the server and the connection; the demo's INFO lines."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import trio

from ..support import free_port, http_request, open_client, wait_until_async


async def test_json_logs_carry_server_and_connection_ids() -> None:
    port = free_port()
    serve = str(Path(sys.executable).parent / "wsproto-trio")
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "SERVER_ID": "log-test",
           "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}  # fmt: skip
    env.pop("REDIS_URL", None)
    with tempfile.TemporaryFile() as err:
        process = await trio.lowlevel.open_process([serve, "serve"], env=env, stderr=err)
        try:

            async def up() -> bool:
                try:
                    status, _ = await http_request("GET", f"http://127.0.0.1:{port}/readyz")
                except OSError:
                    return False
                return status == 200

            await wait_until_async(up)
            async with open_client(f"ws://127.0.0.1:{port}/websockets") as client:
                await client.send("chat", "SubmitMessage", "logged")
                await client.expect("NewMessageReceived")
                user = client.user
            assert (await http_request("GET", f"http://127.0.0.1:{port}/ping1"))[0] == 200
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
        err.seek(0)
        lines = [line for line in err.read().decode().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records, "no JSON log lines"
    ours = [r for r in records if r["logger"].startswith("wsproto_trio")]
    assert all(r["server"] == "log-test" for r in ours), ours
    connected = [r for r in ours if r["msg"].startswith("client connected")]
    assert connected and user in connected[0]["msg"] and connected[0]["connection"] == user
    parsed = [r for r in ours if r["msg"].startswith(f"message from {user}")]
    assert len(parsed) == 2 and all(r["connection"] == user for r in parsed)  # Hello, chat
    assert any("ping received" in r["msg"] for r in ours)
    assert any("memory broker" in r["msg"] for r in ours)
