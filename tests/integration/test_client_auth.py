"""The client library against the real server with authentication on (PROTOCOL.md 8)."""

from __future__ import annotations

import pytest
import trio

from wsproto_trio.client import Expiring, Rejected, open_client
from wsproto_trio.config import AuthSettings

from ..jwt_support import OTHER_SECRET, SECRET, claims, hs_token
from ..support import DEADLINE, open_server, settings_for, wait_until

AUTH = AuthSettings(secret=SECRET)


async def test_a_token_callable_refreshes_on_expiring() -> None:
    issued: list[dict[str, object]] = []

    async def fresh_token() -> str:
        # The first token has less than AUTH_REFRESH_NOTICE left: Expiring comes at once.
        payload = claims("alice", ttl=20 if not issued else 3600)
        issued.append(payload)
        return hs_token(payload)

    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_client(server.ws, token=fresh_token) as client,
    ):
        assert client.sub == "alice"
        with trio.fail_after(DEADLINE):
            while not isinstance(await client.receive(), Expiring):
                pass
        await wait_until(lambda: len(issued) == 2 and client.exp == issued[1]["exp"])
        members = await client.join("lobby")
        assert [(m.user, m.sub) for m in members.members] == [(client.user, "alice")]


async def test_subjects_show_in_member_lists() -> None:
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_client(server.ws, token=hs_token(claims("alice"))) as alice,
        open_client(server.ws, token=hs_token(claims("bob"))) as bob,
    ):
        await alice.join("lobby")
        members = await bob.join("lobby")
        assert {m.sub for m in members.members} == {"alice", "bob"}


async def test_a_token_the_server_refuses_is_rejected() -> None:
    async with open_server(settings_for("s0", auth=AUTH)) as server:
        with trio.fail_after(DEADLINE), pytest.raises(Rejected) as rejected:
            async with open_client(server.ws, token=hs_token(claims(), secret=OTHER_SECRET)):
                pass
        assert rejected.value.status == 401
