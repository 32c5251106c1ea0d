"""A frozen Redis (SIGSTOP) delays nothing but what needs Redis.

The pub/sub link writes SUBSCRIBE without blocking and the command pipe waits in
a worker thread, so while Redis answers nothing, with subscriptions pending,
the event loop keeps serving: websocket pings, ``Welcome`` and error replies.
The latencies are printed as FIGURE lines; the bound asserted (1 s) is far
below the 5 s socket timeout a blocked event loop would show, and far above
any scheduling noise.
"""

from __future__ import annotations

import os
import signal
import time

import trio

from ..support import RedisProcess, open_client, open_server, settings_for, wait_until

BOUND = 1.0


async def test_frozen_redis_with_pending_subscriptions_blocks_no_reply(
    redis_server: RedisProcess,
) -> None:
    async with open_server(settings_for("frozen", redis_server.url)) as server:
        await wait_until(lambda: server.app.hub.status().ready)
        async with open_client(server.ws) as joiner, open_client(server.ws) as other:
            assert redis_server.process is not None
            pid = redis_server.process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                # Joins whose SUBSCRIBE Redis will not confirm while frozen.
                for i in range(50):
                    await joiner.send("chat-room", "JoinRoom", {"room": f"frozen-{i}"})
                await trio.testing.wait_all_tasks_blocked(0.01)

                begin = time.perf_counter()
                await other.send("session", "Hello")
                assert (await other.expect("Welcome", timeout=BOUND))["user"] == other.user
                welcome = time.perf_counter() - begin

                begin = time.perf_counter()
                await other.ws.send_message("{not json")
                assert (await other.expect("Error", timeout=BOUND))["code"] == "invalid_json"
                error = time.perf_counter() - begin

                begin = time.perf_counter()
                with trio.fail_after(BOUND):
                    await other.ws.ping()
                pong = time.perf_counter() - begin
                print(
                    f"FIGURE frozen redis: Welcome {welcome * 1000:.1f} ms, "
                    f"Error {error * 1000:.1f} ms, pong {pong * 1000:.1f} ms"
                )
                assert server.app.hub.status().connected  # not yet noticed: Redis is silent
            finally:
                os.kill(pid, signal.SIGCONT)
            # Once Redis answers again the pending joins complete (or report
            # unavailable after their timeout), and the server is ready again.
            await wait_until(lambda: server.app.hub.status().ready, timeout=30)
