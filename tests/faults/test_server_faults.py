"""PROTOCOL.md section 4 crash rule: servers killed with SIGKILL or paused with SIGSTOP.

Real ``wsproto-trio serve`` processes with ``PRESENCE_TTL=1.5s`` share one real
Redis. The lease design is in ``presence.py``: every server renews its lease
every TTL/3 and reaps lapsed ones in one Lua script, so a dead server's members
are gone within TTL + TTL/3 and exactly one survivor announces each ``LeftRoom``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from ..procs import collect, figure, next_of, spawn_server
from ..support import Client, RedisProcess, open_client, unpositioned

TTL = 1.5
# A lease lapses at most TTL after its last renewal, and a survivor looks every
# TTL/3; the margin covers process scheduling on a loaded machine.
VANISH_DEADLINE = TTL * 4 / 3 + 1.5
ROOM = "crash-room"


async def _join_all(clients: list[Client]) -> None:
    """Each joins in turn; everyone already in sees each later JoinedRoom."""
    for index, client in enumerate(clients):
        users = await client.join(ROOM)
        assert sorted(users) == sorted(c.user for c in clients[: index + 1])
        for member in clients[: index + 1]:
            assert (await next_of(member, "JoinedRoom", 5))["user"] == client.user


def _room_members(redis_server: RedisProcess) -> set[str]:
    with redis_server.client() as client:
        return set(client.hkeys(f"wsproto:room:{{{ROOM}}}:members"))


async def test_killed_server_members_vanish_once(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    env = {"REDIS_URL": redis_server.url, "PRESENCE_TTL": f"{TTL}s"}
    async with (
        spawn_server(tmp_path, "crash-doomed", **env) as doomed,
        spawn_server(tmp_path, "crash-s1", **env) as s1,
        spawn_server(tmp_path, "crash-s2", **env) as s2,
    ):
        for server in (doomed, s1, s2):
            await server.wait_ready()
        async with (
            open_client(doomed.ws) as d1,
            open_client(doomed.ws) as d2,
            open_client(s1.ws) as b,
            open_client(s2.ws) as c,
        ):
            await _join_all([b, c, d1, d2])
            assert redis_server.key_list("wsproto:server:crash-doomed*") != []

            doomed.signal(signal.SIGKILL)
            began = time.monotonic()
            vanished = {d1.user, d2.user}
            for survivor in (b, c):
                seen: set[str] = set()
                while seen != vanished:
                    left = await next_of(survivor, "LeftRoom", VANISH_DEADLINE)
                    assert left["room"] == ROOM and left["user"] in vanished, left
                    seen.add(left["user"])
                if survivor is b:
                    elapsed = time.monotonic() - began
                    figure("crash_to_leftroom_s", elapsed)
                    assert elapsed < VANISH_DEADLINE, elapsed
            # Exactly once: nothing more of that kind within a further second.
            for survivor in (b, c):
                extra = await collect(survivor, 1.0)
                assert not [e for e in extra if e["message"]["type"] == "LeftRoom"], extra
            assert _room_members(redis_server) == {b.user, c.user}
            assert sorted(await c.join("other")) == [c.user]  # the survivors still serve
            assert redis_server.key_list("wsproto:server:crash-doomed*") == []
            with redis_server.client() as client:
                assert "crash-doomed" not in client.zrange("wsproto:servers", 0, -1)
            # Exactly one reaper won, and only one said so in its log.
            reapers = [s for s in (s1, s2) if "reaped 2 members" in s.log()]
            assert len(reapers) == 1, [s.log() for s in (s1, s2)]
            await doomed.wait_exit(5)


async def test_paused_server_is_reaped_then_registers_again(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    env = {"REDIS_URL": redis_server.url, "PRESENCE_TTL": f"{TTL}s"}
    async with (
        spawn_server(tmp_path, "pause-p", **env) as paused,
        spawn_server(tmp_path, "pause-s", **env) as other,
    ):
        for server in (paused, other):
            await server.wait_ready()
        async with open_client(paused.ws) as p, open_client(other.ws) as s:
            await _join_all([s, p])
            paused.signal(signal.SIGSTOP)
            began = time.monotonic()
            try:
                left = await next_of(s, "LeftRoom", VANISH_DEADLINE)
                assert left == {"room": ROOM, "user": p.user}
                figure("pause_to_leftroom_s", time.monotonic() - began)
                assert _room_members(redis_server) == {s.user}
            finally:
                paused.signal(signal.SIGCONT)
            resumed = time.monotonic()
            # Back: it finds its lease gone, registers again and re-adds p.
            joined = await next_of(s, "JoinedRoom", VANISH_DEADLINE)
            figure("resume_to_rejoined_s", time.monotonic() - resumed)
            assert joined == {"room": ROOM, "user": p.user}
            assert _room_members(redis_server) == {s.user, p.user}
            await paused.wait_ready(timeout=10)
            # And its member is a full member again: room traffic flows both ways.
            await p.send("chat-room", "SendMessage", {"room": ROOM, "message": "back"})
            for client in (s, p):
                got = await next_of(client, "NewMessage", 5)
                assert unpositioned(got) == {"room": ROOM, "user": p.user, "message": "back"}
            with redis_server.client() as client:
                assert "pause-p" in client.zrange("wsproto:servers", 0, -1)
            # The lease holds from now on: no second reaping within two TTLs.
            extra = await collect(s, 2 * TTL)
            assert not [e for e in extra if e["message"]["type"] == "LeftRoom"], extra
