"""The real start commands of PROTOCOL.md section 1, run as subprocesses.

``wsproto-trio serve`` and ``hypercorn --worker-class trio ... wsproto_trio.app:app``
are started from the virtualenv of the interpreter running the tests. Every
process is started in a session of its own and its whole process group is killed
in a ``finally`` (hypercorn runs its worker in a child process).
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import WebSocketConnection

from ..procs import (
    HYPERCORN,
    START_DEADLINE,
    WSPROTO_TRIO,
    ServerProcess,
    clean_env,
)
from ..procs import expect_closed_with as expect_closed
from ..procs import spawn as spawn_process
from ..support import (
    RedisProcess,
    free_port,
    open_client,
    open_server,
    settings_for,
    wait_until,
)

SHUTDOWN_TIMEOUT = 2.0


@asynccontextmanager
async def spawn(
    command: list[str], tmp_path: Path, server_id: str, port: int, **variables: str
) -> AsyncIterator[ServerProcess]:
    variables.setdefault("SHUTDOWN_TIMEOUT", str(SHUTDOWN_TIMEOUT))
    async with spawn_process(command, tmp_path, server_id, port, **variables) as server:
        yield server


def serve_command() -> list[str]:
    return [WSPROTO_TRIO, "serve"]


def hypercorn_command(port: int) -> list[str]:
    return [HYPERCORN, "--worker-class", "trio", "-b", f"127.0.0.1:{port}", "wsproto_trio.app:app"]


async def expect_closed_with(client_ws: WebSocketConnection, code: int) -> None:
    await expect_closed(client_ws, code, SHUTDOWN_TIMEOUT + 5)


async def test_serve_without_redis_uses_memory_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    async with spawn(serve_command(), tmp_path, "proc-mem", port, PORT=str(port),
                     HOST="127.0.0.1") as server:  # fmt: skip
        await server.wait_ready()
        await wait_until(lambda: "using the memory broker" in server.log())
        status, body = await server.get("/healthz")
        assert status == 200, body
        assert isinstance(body, dict)
        assert (body["server"], body["broker"], body["broker_connected"]) == (
            "proc-mem",
            "memory",
            True,
        )

        async with open_client(server.ws) as client:
            await client.send("chat", "SubmitMessage", "hello me")
            assert (await client.expect("NewMessageReceived"))["content"] == "hello me"

            server.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            await expect_closed_with(client.ws, 1001)
            code = await server.wait_exit(SHUTDOWN_TIMEOUT + 2)
            assert code == 0, server.log()
            assert time.monotonic() - began < SHUTDOWN_TIMEOUT + 2


async def test_hypercorn_and_serve_form_one_cluster(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    port_h, port_s = free_port(), free_port()
    async with (
        spawn(hypercorn_command(port_h), tmp_path, "proc-hyp", port_h,
              REDIS_URL=redis_server.url) as hyp,
        spawn(serve_command(), tmp_path, "proc-serve", port_s, PORT=str(port_s),
              HOST="127.0.0.1", REDIS_URL=redis_server.url) as served,
    ):  # fmt: skip
        await hyp.wait_ready()
        await served.wait_ready()
        status, body = await hyp.get("/healthz")
        assert status == 200, body
        assert isinstance(body, dict)
        assert (body["server"], body["broker"], body["broker_connected"]) == (
            "proc-hyp",
            "redis",
            True,
        )
        assert (await served.get("/healthz"))[0] == 200

        async with open_client(hyp.ws) as a, open_client(served.ws) as b:
            await a.send("chat", "SubmitMessage", "from hypercorn")
            for client in (a, b):
                assert (await client.expect("NewMessageReceived"))["content"] == "from hypercorn"
            await b.send("chat", "SubmitMessage", "from serve")
            for client in (a, b):
                assert (await client.expect("NewMessageReceived"))["content"] == "from serve"
        assert redis_server.numsub("ping1", "ping2", "chat") == {"ping1": 2, "ping2": 2, "chat": 2}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("MAX_MESSAGE_BYTES", "-1"),
        ("RATE_LIMIT", "fast"),
        ("PRESENCE_TTL", "0"),
        ("REDIS_URL", "http://x"),
    ],
)
async def test_invalid_configuration_stops_start_up(variable: str, value: str) -> None:
    env = clean_env(SERVER_ID="proc-bad", PORT="0", HOST="127.0.0.1")
    env[variable] = value
    began = time.monotonic()
    with trio.fail_after(START_DEADLINE):
        result = await trio.run_process(
            serve_command(), env=env, check=False, capture_stdout=True, capture_stderr=True
        )
    elapsed = time.monotonic() - began
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert variable in lines[0], lines[0]
    assert elapsed < 10, elapsed


async def test_sigterm_removes_members_and_tells_the_other_server(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    port = free_port()
    async with (
        spawn(serve_command(), tmp_path, "proc-term", port, PORT=str(port),
              HOST="127.0.0.1", REDIS_URL=redis_server.url) as doomed,
        open_server(settings_for("inproc", redis_server.url)) as survivor,
    ):  # fmt: skip
        await doomed.wait_ready()
        async with open_client(doomed.ws) as a, open_client(survivor.ws) as b:
            await a.join("shared")
            assert (await a.expect("JoinedRoom"))["user"] == a.user
            assert sorted(await b.join("shared")) == sorted([a.user, b.user])
            assert (await b.expect("JoinedRoom"))["user"] == b.user
            assert (await a.expect("JoinedRoom"))["user"] == b.user
            assert redis_server.key_list("wsproto:server:proc-term*") != []

            doomed.process.send_signal(signal.SIGTERM)
            await expect_closed_with(a.ws, 1001)
            assert await b.expect("LeftRoom", timeout=5) == {"room": "shared", "user": a.user}
            code = await doomed.wait_exit(SHUTDOWN_TIMEOUT + 2)
            assert code == 0, doomed.log()

            # LeftRoom came once: the next envelope is a marker sent afterwards.
            await b.send("chat", "SubmitMessage", "marker")
            assert (await b.expect("NewMessageReceived"))["content"] == "marker"
            assert await survivor.app.hub.broker.members("shared") == [b.user]
        await wait_until(lambda: redis_server.key_list("wsproto:server:proc-term*") == [])
        assert "proc-term" not in await survivor.app.hub.broker.servers()
