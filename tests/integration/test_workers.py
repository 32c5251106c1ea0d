"""`hypercorn --worker-class trio -w 2`: each worker process is its own cluster member."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from ..support import RedisProcess, free_port, open_client, wait_until


async def test_two_hypercorn_workers_are_two_members(redis_server: RedisProcess) -> None:
    port = free_port()
    hypercorn = str(Path(sys.executable).parent / "hypercorn")
    env = {**os.environ, "REDIS_URL": redis_server.url}
    env.pop("SERVER_ID", None)
    with tempfile.TemporaryFile() as log:
        process = await trio.lowlevel.open_process(
            [hypercorn, "--worker-class", "trio", "-w", "2", "-b", f"127.0.0.1:{port}",
             "wsproto_trio.app:app"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            await wait_until(
                lambda: (
                    redis_server.numsub("ping1", "ping2", "chat")
                    == {"ping1": 2, "ping2": 2, "chat": 2}
                ),
                timeout=20,
            )
            with redis_server.client() as client:
                servers = client.zrange("wsproto:servers", 0, -1)
            assert len(servers) == 2 and len(set(servers)) == 2, servers
            url = f"ws://127.0.0.1:{port}/websockets"
            async with open_client(url) as a, open_client(url) as b:
                await a.send("chat", "SubmitMessage", "across workers")
                for client in (a, b):
                    assert (await client.expect("NewMessageReceived"))["content"] == (
                        "across workers"
                    )
        finally:
            process.terminate()
            with trio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
