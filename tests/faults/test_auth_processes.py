"""Authentication under both start commands: no token in any log line, and a crashed
server's members are reaped with their subject in ``LeftRoom``."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from ..jwt_support import OTHER_SECRET, SECRET, claims, hs_token, open_auth_client, rejection
from ..procs import HYPERCORN, kill_group, spawn, spawn_server
from ..support import RedisProcess, free_port

PRESENCE_TTL = 2.0


async def test_no_token_in_logs_and_reaped_left_room_has_sub(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    common = {
        "REDIS_URL": redis_server.url,
        "AUTH_JWT_SECRET": SECRET,
        "LOG_LEVEL": "DEBUG",
        "PRESENCE_TTL": f"{PRESENCE_TTL}s",
    }
    alice_token = hs_token(claims(sub="alice", info={"name": "Alice"}))
    bob_token = hs_token(claims(sub="bob"))
    refresh_token = hs_token(claims(sub="alice", ttl=7200))
    wrong_refresh = hs_token(claims(sub="mallory"))
    forged_token = hs_token(claims(sub="eve"), secret=OTHER_SECRET)
    expired_token = hs_token(claims(sub="eve", ttl=-60))
    tokens = [alice_token, bob_token, refresh_token, wrong_refresh, forged_token, expired_token]

    port = free_port()
    hypercorn = [HYPERCORN, "--worker-class", "trio", "-b", f"127.0.0.1:{port}",
                 "wsproto_trio.app:app"]  # fmt: skip
    async with (
        spawn(hypercorn, tmp_path, "h1", port, **common) as plain,
        spawn_server(tmp_path, "s0", **common) as served,
    ):
        await plain.wait_ready()
        await served.wait_ready()
        async with open_auth_client(plain.ws, bob_token, header=True) as bob_conn:
            bob = bob_conn.client
            await bob.join("room")
            await bob.expect("JoinedRoom")
            async with open_auth_client(served.ws, alice_token) as alice_conn:
                alice = alice_conn.client
                await alice.join("room")
                await alice.expect("JoinedRoom")
                await bob.expect("JoinedRoom")
                await alice.send("session", "Refresh", {"token": refresh_token})
                assert (await alice.expect("Welcome"))["exp"] is not None
                await alice.send("session", "Refresh", {"token": wrong_refresh})
                assert (await alice.expect("Error"))["code"] == "invalid_token"
                for server in (plain, served):
                    for bad in (forged_token, expired_token):
                        assert (await rejection(server.ws, bad))[0] == 401
                        assert (await rejection(server.ws, bad, header=True))[0] == 401

                # s0 dies without a goodbye: h1 reaps alice within PRESENCE_TTL and
                # announces her with her own LeftRoom, subject included.
                await kill_group(served.process)
                with trio.fail_after(PRESENCE_TTL * 5 + 10):
                    while (envelope := await bob.receive(60))["message"]["type"] != "LeftRoom":
                        pass
                left = envelope["message"]["contents"]
                assert left == {"room": "room", "user": alice.user, "sub": "alice"}

        for server in (plain, served):
            log = server.log()
            assert "refused with 401" in log, log[-2000:]
            for token in tokens:
                assert token not in log
                assert token.split(".")[2] not in log  # not even the signature
            assert SECRET not in log
            assert json.dumps(SECRET) not in log
