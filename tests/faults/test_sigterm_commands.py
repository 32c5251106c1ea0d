"""PROTOCOL.md section 6, SIGTERM under each start command of section 1.

``wsproto-trio serve``, ``hypercorn --worker-class trio -w 1`` and ``-w 2``
(SIGTERM to Hypercorn's parent, as a supervisor sends it), and ``-w 0`` (one
process, where Hypercorn's trio worker handles no signal itself): every
client of the stopped process gets close code 1001 within a second, the
client of another server sharing its room gets exactly one ``LeftRoom`` per
stopped member, nothing of the stopped servers stays in Redis, and the process
exits with status 0 within ``SHUTDOWN_TIMEOUT``. The timings are printed as
FIGURE lines (``pytest -s``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from ..procs import (
    HYPERCORN,
    WSPROTO_TRIO,
    clean_env,
    expect_closed_with,
    figure,
    next_of,
    spawn_with_env,
)
from ..support import (
    Client,
    RedisProcess,
    free_port,
    open_client,
    open_server,
    settings_for,
    wait_until,
)

SHUTDOWN_TIMEOUT = 4.0
CLOSE_WITHIN = 1.0  # PROTOCOL.md section 6
MAX_CLIENTS = 64  # the kernel picks the accepting worker: enough to reach both


def command_for(name: str, port: int) -> list[str]:
    if name == "serve":
        return [WSPROTO_TRIO, "serve"]
    workers = name.removeprefix("hypercorn-w")
    return [HYPERCORN, "--worker-class", "trio", "-w", workers, "-b", f"127.0.0.1:{port}",
            "wsproto_trio.app:app"]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "servers"),
    [("serve", 1), ("hypercorn-w0", 1), ("hypercorn-w1", 1), ("hypercorn-w2", 2)],
)
async def test_sigterm_closes_with_1001_leaves_presence_and_exits(
    tmp_path: Path, redis_server: RedisProcess, name: str, servers: int
) -> None:
    port = free_port()
    async with (
        spawn_with_env(command_for(name, port), tmp_path, f"term-{name}", port,
                       clean_env(PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_server.url,
                                 SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))) as doomed,
        open_server(settings_for("term-other", redis_server.url)) as other,
        trio.open_nursery() as clients,
    ):  # fmt: skip
        await doomed.wait_ready()
        # /readyz answers from whichever worker accepts: wait until every
        # worker holds its lease (and so can take clients) before connecting.
        await wait_until(lambda: len(live_servers(redis_server)) == servers + 1, timeout=20)
        async with open_client(other.ws) as b:
            await b.join("shared")
            doomed_clients = await connect_until_spread(clients, doomed.ws, servers, redis_server)
            owners = room_owners(redis_server)
            doomed_ids = {owners[c.user] for c in doomed_clients}
            assert len(doomed_ids) == servers, owners
            for client in doomed_clients:
                await next_of(b, "JoinedRoom", 5)  # b saw each join before the signal
                assert owners[client.user] != "term-other"

            closes: dict[str, tuple[int | None, float]] = {}

            async def watch(client: Client) -> None:
                try:
                    while True:
                        await client.ws.get_message()
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason is not None else None
                    closes[client.user] = (code, time.monotonic() - began)

            doomed.signal(signal.SIGTERM)
            began = time.monotonic()
            left: list[str] = []
            with trio.fail_after(SHUTDOWN_TIMEOUT + 2):
                async with trio.open_nursery() as nursery:
                    for client in doomed_clients:
                        nursery.start_soon(watch, client)
                    while len(left) < len(doomed_clients):
                        envelope = await next_of(b, "LeftRoom", SHUTDOWN_TIMEOUT)
                        left.append(envelope["user"])
                left_after = time.monotonic() - began
                status = await doomed.process.wait()
            exited_after = time.monotonic() - began

            slowest_close = max(after for _, after in closes.values())
            figure(f"sigterm_{name}_slowest_1001_s", slowest_close)
            figure(f"sigterm_{name}_last_leftroom_s", left_after)
            figure(f"sigterm_{name}_exit_s", exited_after)
            figure(f"sigterm_{name}_clients", len(doomed_clients))
            assert {code for code, _ in closes.values()} == {1001}, closes
            assert slowest_close < CLOSE_WITHIN, closes
            assert sorted(left) == sorted(c.user for c in doomed_clients)
            assert status == 0, doomed.log()
            assert exited_after < SHUTDOWN_TIMEOUT, doomed.log()

            # Each LeftRoom came once: the stopped servers have exited, so
            # anything they published is ahead of a marker published now.
            await b.send("chat", "SubmitMessage", "marker")
            while (envelope := await b.receive(5))["message"]["type"] != "NewMessageReceived":
                assert envelope["message"]["type"] != "LeftRoom", envelope
            assert room_owners(redis_server) == {b.user: "term-other"}
            assert live_servers(redis_server) == ["term-other"]
            for server_id in doomed_ids:
                assert redis_server.key_list(f"wsproto:server:{server_id}*") == []
        clients.cancel_scope.cancel()


async def connect_until_spread(
    nursery: trio.Nursery, url: str, servers: int, redis_server: RedisProcess
) -> list[Client]:
    """Clients joined to ``shared`` until they sit on ``servers`` servers (Hypercorn workers)."""
    connected: list[Client] = []
    for _ in range(MAX_CLIENTS):
        client: Client = await nursery.start(hold_client, url)
        await client.join("shared")
        connected.append(client)
        owners = room_owners(redis_server)
        if len({owners[c.user] for c in connected}) == servers and len(connected) >= 2:
            return connected
    raise AssertionError(f"{MAX_CLIENTS} clients did not spread over {servers} servers")


async def hold_client(url: str, *, task_status: trio.TaskStatus[Client]) -> None:
    async with open_client(url) as client:
        task_status.started(client)
        await trio.sleep_forever()


def live_servers(redis_server: RedisProcess) -> list[str]:
    with redis_server.client() as redis:
        servers: list[str] = redis.zrange("wsproto:servers", 0, -1)
    return servers


def room_owners(redis_server: RedisProcess) -> dict[str, str]:
    """user -> server id of the members of room ``shared``, from presence."""
    with redis_server.client() as redis:
        values: dict[str, str] = redis.hgetall("wsproto:room:{shared}:members")
    # A member's value starts with its owner's id (broker/scripts.py).
    return {user: value.split("\n", 1)[0] for user, value in values.items()}


async def test_sigterm_under_hypercorn_with_frozen_redis_still_exits_by_the_deadline(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    """The one deadline holds in a Hypercorn worker too: 1001 at once, then the
    presence clean-up waits on the frozen Redis until ``SHUTDOWN_TIMEOUT``, when
    the worker exits (status 1, logged) and so does Hypercorn."""
    port = free_port()
    env = clean_env(REDIS_URL=redis_server.url, SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
    async with spawn_with_env(
        command_for("hypercorn-w1", port), tmp_path, "term-frozen-hyp", port, env
    ) as doomed:
        await doomed.wait_ready()
        async with open_client(doomed.ws) as a:
            await a.join("room")
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                doomed.signal(signal.SIGTERM)
                began = time.monotonic()
                await expect_closed_with(a.ws, 1001, SHUTDOWN_TIMEOUT)
                figure("sigterm_hypercorn_frozen_redis_1001_s", time.monotonic() - began)
                await doomed.wait_exit(SHUTDOWN_TIMEOUT + 2 - (time.monotonic() - began))
                figure("sigterm_hypercorn_frozen_redis_exit_s", time.monotonic() - began)
                assert "did not finish within SHUTDOWN_TIMEOUT" in doomed.log()
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
