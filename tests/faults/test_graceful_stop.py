"""PROTOCOL.md section 6, SIGTERM: drain with 1001, leave presence, exit in time.

``wsproto-trio serve`` runs as a subprocess with its default ``SHUTDOWN_TIMEOUT``
(5 s); a second signal during a drain exits at once.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import trio

from ..procs import expect_closed_with, figure, next_of, spawn_server
from ..support import RedisProcess, open_client, open_server, settings_for, wait_until

SHUTDOWN_TIMEOUT = 5.0  # the default, which this test does not override


async def test_sigterm_drains_with_1001_and_leaves_presence(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    async with (
        spawn_server(tmp_path, "term-doomed", REDIS_URL=redis_server.url) as doomed,
        open_server(settings_for("term-other", redis_server.url)) as other,
    ):
        await doomed.wait_ready()
        async with (
            open_client(doomed.ws) as a1,
            open_client(doomed.ws) as a2,
            open_client(doomed.ws) as a3,
            open_client(other.ws) as b,
        ):
            await a1.join("shared")
            await next_of(a1, "JoinedRoom", 5)
            await a2.join("doomed-only")
            assert sorted(await b.join("shared")) == sorted([a1.user, b.user])
            assert redis_server.key_list("wsproto:server:term-doomed*") != []

            doomed.signal(signal.SIGTERM)
            began = time.monotonic()
            async with trio.open_nursery() as nursery:
                for client in (a1, a2, a3):
                    nursery.start_soon(expect_closed_with, client.ws, 1001, SHUTDOWN_TIMEOUT)
            closed = time.monotonic() - began
            left = await next_of(b, "LeftRoom", SHUTDOWN_TIMEOUT)
            assert left == {"room": "shared", "user": a1.user}
            code = await doomed.wait_exit(SHUTDOWN_TIMEOUT + 1 - (time.monotonic() - began))
            drained = time.monotonic() - began
            assert code == 0, doomed.log()
            figure("sigterm_all_closed_1001_s", closed)
            figure("sigterm_drain_to_exit_s", drained)

            assert redis_server.key_list("wsproto:server:term-doomed*") == []
            with redis_server.client() as client:
                assert "term-doomed" not in client.zrange("wsproto:servers", 0, -1)
                assert client.hkeys("wsproto:room:{shared}:members") == [b.user]
                assert not client.exists("wsproto:room:{doomed-only}:members")
            # Its subscriptions went with it: only the survivor's remain.
            assert redis_server.numsub("chat", "room:shared", "room:doomed-only") == {
                "chat": 1,
                "room:shared": 1,
                "room:doomed-only": 0,
            }


async def test_second_sigterm_during_a_drain_exits_at_once(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    """A drain held up by a frozen Redis (SIGSTOP) is cut short by a second signal."""
    async with spawn_server(tmp_path, "term-twice", REDIS_URL=redis_server.url) as server:
        await server.wait_ready()
        async with open_client(server.ws) as a:
            await a.join("room")
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                server.signal(signal.SIGTERM)
                await wait_until(lambda: "shutting down" in server.log())
                # The drain is now waiting for the frozen Redis to deregister.
                assert server.process.poll() is None
                server.signal(signal.SIGTERM)
                began = time.monotonic()
                code = await server.wait_exit(1.0)
                figure("second_signal_exit_s", time.monotonic() - began)
                assert code != 0
                assert "second signal" in server.log()
            finally:
                redis_server.process.send_signal(signal.SIGCONT)


async def test_sigterm_with_frozen_redis_still_exits_within_the_deadline(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    """The deadline is for the whole stop, even when presence cannot be cleaned up.

    Clients still get their 1001 at once (the close frame is sent before the
    connection's presence clean-up, which waits for the frozen broker).
    """
    async with spawn_server(tmp_path, "term-frozen", REDIS_URL=redis_server.url) as server:
        await server.wait_ready()
        async with open_client(server.ws) as a, open_client(server.ws) as b:
            await a.join("room")
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                server.signal(signal.SIGTERM)
                began = time.monotonic()
                async with trio.open_nursery() as nursery:
                    for client in (a, b):
                        nursery.start_soon(expect_closed_with, client.ws, 1001, SHUTDOWN_TIMEOUT)
                figure("sigterm_frozen_redis_1001_s", time.monotonic() - began)
                code = await server.wait_exit(SHUTDOWN_TIMEOUT + 1 - (time.monotonic() - began))
                figure("sigterm_frozen_redis_exit_s", time.monotonic() - began)
                # Presence could not be cleaned up: the deadline cut the stop
                # short, and the exit status says it was not clean.
                assert code == 1, server.log()
                assert "did not finish within SHUTDOWN_TIMEOUT" in server.log()
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
