"""A crashed hub stops the server: never a process serving websockets with a dead hub.

The broker of ``crashing_hub`` raises out of ``serve`` once a client joins room
``crash``. In-process the app must stop being ready and close its clients
(1011); under each start command the process must also exit, non-zero
(the worker's status, under plain ``hypercorn``: see the note below).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from ..procs import HYPERCORN, expect_closed_with, figure, spawn
from ..support import free_port, open_client, open_server, settings_for, wait_until
from .crashing_hub import CRASH_ROOM, CrashingBroker

REPO = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT = 2.0


async def test_a_crashed_hub_closes_clients_and_is_not_ready() -> None:
    settings = settings_for("crash-in", shutdown_timeout=SHUTDOWN_TIMEOUT)
    async with open_server(settings, CrashingBroker("crash-in")) as server:
        assert (await server.get("/readyz"))[0] == 200
        async with open_client(server.ws) as a, open_client(server.ws) as b:
            await b.send("chat-room", "JoinRoom", {"room": CRASH_ROOM})
            async with trio.open_nursery() as nursery:
                for client in (a, b):
                    nursery.start_soon(expect_closed_with, client.ws, 1011, SHUTDOWN_TIMEOUT)
        status, body = await server.get("/readyz")
        assert status == 503 and "hub crashed" in body["reason"], body
        status, body = await server.get("/healthz")
        assert status == 503 and "hub crashed" in body["reason"], body
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(server.ws, connect_timeout=5):
                pass
        assert rejected.value.status_code == 503
        await wait_until(lambda: server.app.lifecycle.drained.is_set())
        assert server.app.lifecycle.exit_status == 1


@pytest.mark.parametrize("command", ["serve", "hypercorn"])
async def test_a_crashed_hub_exits_the_process_non_zero(tmp_path: Path, command: str) -> None:
    port = free_port()
    if command == "serve":
        argv = [sys.executable, "-m", "tests.faults.crashing_hub"]
    else:
        argv = [HYPERCORN, "--worker-class", "trio", "-b", f"127.0.0.1:{port}",
                "tests.faults.crashing_hub:app"]  # fmt: skip
    async with spawn(
        argv, tmp_path, f"crash-{command}", port, PORT=str(port), HOST="127.0.0.1",
        SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT), PYTHONPATH=str(REPO),
    ) as server:  # fmt: skip
        await server.wait_ready()
        async with open_client(server.ws) as a, open_client(server.ws) as b:
            await b.send("chat-room", "JoinRoom", {"room": CRASH_ROOM})
            began = trio.current_time()
            await expect_closed_with(a.ws, 1011, SHUTDOWN_TIMEOUT)
            code = await server.wait_exit(SHUTDOWN_TIMEOUT + 2)
            figure(f"hub_crash_{command}_exit_s", trio.current_time() - began)
        log = server.log()
        assert "hub crashed" in log
        assert "exiting with status 1" in log or "exiting now with status 1" in log, log
        if command == "serve":
            assert code == 1, log
        else:
            # The worker exits 1, but Hypercorn 0.18's parent loses a worker's
            # status (hypercorn/run.py: its second ``_join_exited`` over the
            # workers left overwrites it, with 0 when none is left).
            figure("hub_crash_hypercorn_parent_status", code)
