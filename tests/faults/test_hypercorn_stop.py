"""SIGTERM under the plain ``hypercorn`` command: what docs/deployment.md promises.

Hypercorn's parent catches the signal and sets the event its worker polls; the
app watches the same event (``server.lifecycle``) and drains at once, as under
``wsproto-trio serve``: every websocket is closed with 1001, presence is
removed (the other server's client gets exactly one ``LeftRoom`` for the
stopped member), nothing of the stopped server stays in Redis, and the process
exits well within Hypercorn's grace time. ``test_sigterm_commands.py`` runs
the same for each start command, ``-w 2`` included.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from ..procs import HYPERCORN, figure, next_of, spawn, spawn_server
from ..support import Client, RedisProcess, free_port, open_client

GRACEFUL_TIMEOUT = 3.0  # Hypercorn's default --graceful-timeout, not overridden here
MARGIN = 2.0  # both processes' exits


async def test_sigterm_under_plain_hypercorn_leaves_presence_and_exits_in_time(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    port = free_port()
    command = [HYPERCORN, "--worker-class", "trio", "-b", f"127.0.0.1:{port}",
               "wsproto_trio.app:app"]  # fmt: skip
    async with (
        spawn(command, tmp_path, "hyp-doomed", port, REDIS_URL=redis_server.url) as doomed,
        spawn_server(tmp_path, "hyp-other", REDIS_URL=redis_server.url) as other,
    ):
        await doomed.wait_ready()
        await other.wait_ready()
        async with (
            open_client(doomed.ws) as a,
            open_client(doomed.ws) as a2,
            open_client(other.ws) as b,
        ):
            await a.join("shared")
            await next_of(a, "JoinedRoom", 5)
            await a2.join("hyp-only")
            assert sorted(await b.join("shared")) == sorted([a.user, b.user])
            assert redis_server.key_list("wsproto:server:hyp-doomed*") != []
            with redis_server.client() as client:
                assert "hyp-doomed" in client.zrange("wsproto:servers", 0, -1)

            closes: dict[str, tuple[int | None, float]] = {}

            async def watch(client: Client, name: str) -> None:
                try:
                    while True:
                        await client.ws.get_message()
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason is not None else None
                    closes[name] = (code, time.monotonic() - began)

            doomed.signal(signal.SIGTERM)
            began = time.monotonic()
            with trio.fail_after(GRACEFUL_TIMEOUT + MARGIN):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch, a, "a")
                    nursery.start_soon(watch, a2, "a2")
                    left = await next_of(b, "LeftRoom", GRACEFUL_TIMEOUT + MARGIN)
                    left_after = time.monotonic() - began
                code = await doomed.process.wait()
            exited_after = time.monotonic() - began

            figure("hypercorn_sigterm_client_close_code", closes["a"][0] or -1)
            figure("hypercorn_sigterm_client_closed_s", closes["a"][1])
            figure("hypercorn_sigterm_leftroom_s", left_after)
            figure("hypercorn_sigterm_exit_s", exited_after)
            figure("hypercorn_sigterm_exit_status", code)
            print(f"hypercorn clients closed with {closes}")
            assert left == {"room": "shared", "user": a.user}
            assert closes["a"][0] == closes["a2"][0] == 1001, closes
            assert code == 0, doomed.log()
            assert exited_after < GRACEFUL_TIMEOUT + MARGIN

            # LeftRoom came once: the stopped server has exited, so anything it
            # published is already ahead of a marker published now.
            await b.send("chat", "SubmitMessage", "marker")
            while (envelope := await b.receive(5))["message"]["type"] != "NewMessageReceived":
                assert envelope["message"]["type"] != "LeftRoom", envelope
            assert envelope["message"]["contents"]["content"] == "marker"

            assert redis_server.key_list("wsproto:server:hyp-doomed*") == []
            with redis_server.client() as client:
                assert "hyp-doomed" not in client.zrange("wsproto:servers", 0, -1)
                assert client.hkeys("wsproto:room:{shared}:members") == [b.user]
                assert not client.exists("wsproto:room:{hyp-only}:members")
            assert redis_server.numsub("chat", "room:shared", "room:hyp-only") == {
                "chat": 1,
                "room:shared": 1,
                "room:hyp-only": 0,
            }
