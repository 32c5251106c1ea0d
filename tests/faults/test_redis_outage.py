"""PROTOCOL.md section 6, Redis goes away: five real outages under two servers.

The real ``redis-server`` is stopped (clients stay connected, what cannot be
published gets ``unavailable``, ``/healthz`` is 503) and started again on the
same port, empty: each server must reconnect on its own, subscribe every channel
again and re-register its room members, so chat and rooms cross servers again.
"""

from __future__ import annotations

import time

import trio

from ..procs import figure, next_of
from ..support import (
    RedisProcess,
    open_client,
    open_cluster,
    unpositioned,
    wait_until,
    wait_until_async,
)

OUTAGES = 5
RECOVERY_DEADLINE = 15.0  # backoff is capped at 5 s; generous for a loaded CI box
# The last outage is held this long (a scenario length, not synchronisation) so
# that the backoff has grown past its first steps before Redis returns.
LONG_OUTAGE = 3.0


async def test_five_redis_outages_in_a_row(redis_server: RedisProcess) -> None:
    room = "outage room"
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            await a.join(room)
            await next_of(a, "JoinedRoom", 5)
            assert sorted(await b.join(room)) == sorted([a.user, b.user])
            recoveries: list[float] = []
            for outage in range(OUTAGES):
                redis_server.stop()
                # Down: both servers notice, say so on /healthz, and refuse to
                # pretend a chat message went out.
                await wait_until(lambda: not any(s.app.hub.status().connected for s in (s0, s1)))
                for server in (s0, s1):
                    status, body = await server.get("/healthz")
                    assert status == 503, body
                    assert "redis" in body["reason"], body
                    assert (await server.get("/readyz"))[0] == 503
                await a.send("chat", "SubmitMessage", f"lost {outage}")
                error = await next_of(a, "Error", 15)
                assert error["code"] == "unavailable", error
                assert not a.ws.closed and not b.ws.closed
                if outage == OUTAGES - 1:
                    await trio.sleep(LONG_OUTAGE)
                    assert (await s0.get("/healthz"))[0] == 503

                redis_server.start()  # same port, empty database
                began = time.monotonic()
                await wait_until(
                    lambda: all(s.app.hub.status().ready for s in (s0, s1)),
                    timeout=RECOVERY_DEADLINE,
                )
                recovered = time.monotonic() - began
                recoveries.append(recovered)
                figure(f"outage{outage + 1}_recovery_s", recovered)

                # Chat crosses servers again, both ways.
                await a.send("chat", "SubmitMessage", f"back {outage} from a")
                for client in (a, b):
                    got = await next_of(client, "NewMessageReceived", 10)
                    assert got["content"] == f"back {outage} from a"
                await b.send("chat", "SubmitMessage", f"back {outage} from b")
                for client in (a, b):
                    got = await next_of(client, "NewMessageReceived", 10)
                    assert got["content"] == f"back {outage} from b"
                # So does the room, and the wiped presence is back.
                await b.send("chat-room", "SendMessage", {"room": room, "message": f"r{outage}"})
                for client in (a, b):
                    got = await next_of(client, "NewMessage", 10)
                    assert unpositioned(got) == {
                        "room": room,
                        "user": b.user,
                        "message": f"r{outage}",
                    }
                assert redis_server.numsub("ping1", "ping2", "chat", f"room:{room}") == {
                    "ping1": 2,
                    "ping2": 2,
                    "chat": 2,
                    f"room:{room}": 2,
                }

                async def both_members() -> bool:
                    users = await s0.app.hub.broker.members(room)
                    return sorted(users) == sorted([a.user, b.user])

                await wait_until_async(both_members, timeout=5)
                # Reconnects are counted.
                assert all(s.app.hub.status().reconnects == outage + 1 for s in (s0, s1))
            figure("outage_recovery_max_s", max(recoveries))
            figure("outage_recovery_mean_s", sum(recoveries) / len(recoveries))
        # Everyone gone: no room subscription is left behind.
        await wait_until(lambda: redis_server.numsub(f"room:{room}") == {f"room:{room}": 0})
