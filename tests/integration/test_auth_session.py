"""Authentication after the handshake, on real servers: permissions, identity fields across
two servers on one Redis, expiry with 4001, and refresh."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from wsproto_trio.config import AuthSettings

from ..jwt_support import SECRET, claims, hs_token, open_auth_client
from ..support import RedisProcess, open_cluster, open_server, settings_for

AUTH = AuthSettings(secret=SECRET)
IDENTITY_FIELDS = {"sub", "info", "members", "exp"}


async def error_code(client: Any, channel: str, kind: str, contents: Any) -> str:
    await client.send(channel, kind, contents)
    code: str = (await client.expect("Error"))["code"]
    return code


async def test_permissions_and_their_order() -> None:
    token = hs_token(claims(rooms=["team-*", "lobby"], send=["team-*"], chat=False))
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_auth_client(server.ws, token) as alice,
    ):
        c = alice.client
        # Shape and room-name checks come first...
        assert await error_code(c, "chat-room", "JoinRoom", {"room": ""}) == "invalid_room"
        assert await error_code(c, "chat-room", "JoinRoom", {}) == "invalid_message"
        assert await error_code(c, "chat", "SubmitMessage", "") == "invalid_message"
        # ...then the permission...
        assert await error_code(c, "chat-room", "JoinRoom", {"room": "ops"}) == "forbidden"
        assert await error_code(c, "chat-room", "JoinRoom", {"room": "Team-a"}) == "forbidden"
        assert await error_code(c, "chat", "SubmitMessage", "hi") == "forbidden"
        message = {"room": "ops", "message": "hi"}
        assert await error_code(c, "chat-room", "SendMessage", message) == "forbidden"
        # ...then membership.
        message = {"room": "team-a", "message": "hi"}
        assert await error_code(c, "chat-room", "SendMessage", message) == "not_joined"
        await c.join("lobby")
        await c.expect("JoinedRoom")
        assert await error_code(c, "chat-room", "JoinRoom", {"room": "lobby"}) == "already_joined"
        message = {"room": "lobby", "message": "hi"}
        assert await error_code(c, "chat-room", "SendMessage", message) == "forbidden"
        await c.join("team-")  # '*' matches the empty run
        await c.expect("JoinedRoom")
        await c.send("chat-room", "SendMessage", {"room": "team-", "message": "hi"})
        assert (await c.expect("NewMessage"))["message"] == "hi"
        # LeaveRoom is never forbidden.
        await c.send("chat-room", "LeaveRoom", {"room": "lobby"})
        assert (await c.expect("LeftRoom"))["room"] == "lobby"


async def test_empty_rooms_allows_no_room() -> None:
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_auth_client(server.ws, hs_token(claims(rooms=[]))) as reader,
    ):
        assert await error_code(reader.client, "chat-room", "JoinRoom", {"room": "x"}) == (
            "forbidden"
        )
        await reader.client.send("chat", "SubmitMessage", "still chatting")
        assert (await reader.client.expect("NewMessageReceived"))["sub"] == "alice"


async def test_identity_fields_across_two_servers(redis_server: RedisProcess) -> None:
    alice_token = hs_token(claims(sub="alice", info={"name": "Alice", "color": "red"}))
    bob_token = hs_token(claims(sub="bob"))
    async with (
        open_cluster(redis_server.url, 2, auth=AUTH, admin_token="admin") as (s0, s1),
        open_auth_client(s0.ws, alice_token) as alice_conn,
        open_auth_client(s1.ws, bob_token, header=True) as bob_conn,
    ):
        alice, bob = alice_conn.client, bob_conn.client
        await bob.send("chat-room", "JoinRoom", {"room": "team"})
        listing = await bob.expect("MemberList")
        assert listing["users"] == [bob.user]
        assert listing["members"] == [{"user": bob.user, "sub": "bob"}]
        assert await bob.expect("JoinedRoom") == {"room": "team", "user": bob.user, "sub": "bob"}

        await alice.send("chat-room", "JoinRoom", {"room": "team"})
        listing = await alice.expect("MemberList")
        by_user = {m["user"]: m for m in listing["members"]}
        assert sorted(listing["users"]) == sorted(by_user)
        assert by_user == {
            bob.user: {"user": bob.user, "sub": "bob"},
            alice.user: {"user": alice.user, "sub": "alice", "info": alice_token_info()},
        }
        joined = {"room": "team", "user": alice.user, "sub": "alice", "info": alice_token_info()}
        assert await alice.expect("JoinedRoom") == joined
        assert await bob.expect("JoinedRoom") == joined

        await alice.send("chat-room", "SendMessage", {"room": "team", "message": "hi"})
        for client in (alice, bob):
            message = await client.expect("NewMessage")
            assert (message["user"], message["sub"], message["message"]) == (
                alice.user,
                "alice",
                "hi",
            )
            assert "info" not in message

        await bob.send("chat", "SubmitMessage", "hello")
        for client in (alice, bob):
            received = await client.expect("NewMessageReceived")
            assert received["sub"] == "bob" and received["content"] == "hello"

        body = json.dumps({"channel": "chat-room", "room": "team", "message": "from api"})
        assert (await s0.post("/api/publish", body, token="admin"))[0] == 200
        for client in (alice, bob):
            message = await client.expect("NewMessage")
            assert message["user"] == "api" and message["sub"] is None

        await alice.send("chat-room", "LeaveRoom", {"room": "team"})
        left = {"room": "team", "user": alice.user, "sub": "alice"}
        assert await alice.expect("LeftRoom") == left
        assert await bob.expect("LeftRoom") == left


def alice_token_info() -> dict[str, str]:
    return {"name": "Alice", "color": "red"}


async def test_no_identity_fields_with_auth_off(redis_server: RedisProcess) -> None:
    async with (
        open_cluster(redis_server.url, 2) as (s0, s1),
        open_auth_client(s0.ws) as a,
        open_auth_client(s1.ws, hs_token()) as b,  # a token is ignored with auth off
    ):
        seen = [a.welcome, b.welcome]
        for conn in (a, b):
            await conn.client.send("chat-room", "JoinRoom", {"room": "r"})
            seen.append(await conn.client.expect("MemberList"))
            seen.append(await conn.client.expect("JoinedRoom"))
        seen.append(await a.client.expect("JoinedRoom"))
        await a.client.send("chat-room", "SendMessage", {"room": "r", "message": "m"})
        await a.client.send("chat", "SubmitMessage", "c")
        await a.client.send("chat-room", "LeaveRoom", {"room": "r"})
        for conn in (a, b):
            seen.append(await conn.client.expect("NewMessage"))
            seen.append(await conn.client.expect("NewMessageReceived"))
            seen.append(await conn.client.expect("LeftRoom"))
        for contents in seen:
            assert not IDENTITY_FIELDS & set(contents), contents


async def test_expiry_closes_4001_and_members_elsewhere_get_left_room(
    redis_server: RedisProcess,
) -> None:
    short = hs_token(claims(sub="alice", ttl=5))
    auth = AuthSettings(secret=SECRET, refresh_notice=2.0, leeway=0.0)
    async with (
        open_cluster(redis_server.url, 2, auth=auth) as (s0, s1),
        open_auth_client(s1.ws, hs_token(claims(sub="bob"))) as bob_conn,
    ):
        bob = bob_conn.client
        await bob.join("room")
        await bob.expect("JoinedRoom")
        async with open_auth_client(s0.ws, short) as alice_conn:
            alice = alice_conn.client
            exp = alice_conn.welcome["exp"]
            await alice.send("chat-room", "JoinRoom", {"room": "room"})
            got: list[dict[str, Any]] = []
            with trio.fail_after(15), pytest.raises(ConnectionClosed) as closed:
                while True:
                    got.append(await alice.receive())
            reason = closed.value.reason
            assert reason is not None and (reason.code, reason.reason) == (4001, "token expired")
            assert time.time() >= exp - 1  # at exp, not before (exp is whole seconds)
            kinds = [envelope["message"]["type"] for envelope in got]
            assert kinds.count("Expiring") == 1 and "JoinedRoom" in kinds, kinds
            expiring = got[kinds.index("Expiring")]["message"]["contents"]
            assert expiring == {"exp": exp}
            assert await bob.expect("JoinedRoom") == {
                "room": "room",
                "user": alice.user,
                "sub": "alice",
            }
            left = await bob.expect("LeftRoom", timeout=10)
            assert left == {"room": "room", "user": alice.user, "sub": "alice"}


async def test_expiring_at_once_when_less_than_the_notice_is_left() -> None:
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_auth_client(server.ws, hs_token(claims(ttl=20))) as alice,
    ):
        # AUTH_REFRESH_NOTICE is 30 s and 20 s are left: the notice is due now.
        assert await alice.client.expect("Expiring") == {"exp": alice.welcome["exp"]}


async def test_refresh_same_subject_narrower_rooms(redis_server: RedisProcess) -> None:
    async with (
        open_cluster(redis_server.url, 2, auth=AUTH) as (s0, s1),
        open_auth_client(s0.ws, hs_token(claims(sub="alice", ttl=600))) as alice_conn,
        open_auth_client(s1.ws, hs_token(claims(sub="bob"))) as bob_conn,
    ):
        alice, bob = alice_conn.client, bob_conn.client
        for room in ("lobby", "team-a"):
            await bob.join(room)
            await bob.expect("JoinedRoom")
            await alice.join(room)
            await alice.expect("JoinedRoom")
            await bob.expect("JoinedRoom")
        narrower = claims(sub="alice", ttl=7200, rooms=["team-*"])
        await alice.send("session", "Refresh", {"token": hs_token(narrower)})
        left = {"room": "lobby", "user": alice.user, "sub": "alice"}
        assert await alice.expect("LeftRoom") == left
        welcome = await alice.expect("Welcome")
        assert welcome == {
            "user": alice.user,
            "server": "s0",
            "sub": "alice",
            "exp": narrower["exp"],
        }
        assert await bob.expect("LeftRoom") == left
        # Still in team-a, now under the new claims.
        await alice.send("chat-room", "SendMessage", {"room": "team-a", "message": "still here"})
        assert (await bob.expect("NewMessage"))["message"] == "still here"
        assert (await alice.expect("NewMessage"))["message"] == "still here"
        assert await error_code(alice, "chat-room", "JoinRoom", {"room": "lobby"}) == "forbidden"


async def test_refresh_other_subject_and_bad_refreshes_change_nothing() -> None:
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_auth_client(server.ws, hs_token(claims(sub="alice", rooms=["a"]))) as conn,
    ):
        alice = conn.client
        await alice.join("a")
        await alice.expect("JoinedRoom")
        for token, detail in [
            (hs_token(claims(sub="mallory")), "another subject"),
            (hs_token(claims(sub="alice", ttl=-60)), "token expired"),
            ("garbage", "malformed token"),
        ]:
            await alice.send("session", "Refresh", {"token": token})
            error = await alice.expect("Error")
            assert error["code"] == "invalid_token" and detail in error["detail"]
        for contents in [None, {}, {"token": 5}, "tok", {"token": ""}]:
            assert await error_code(alice, "session", "Refresh", contents) == "invalid_message"
        # Nothing changed: same claims, same exp, still in the room.
        await alice.send("session", "Hello")
        assert await alice.expect("Welcome") == conn.welcome
        await alice.send("chat-room", "SendMessage", {"room": "a", "message": "ok"})
        assert (await alice.expect("NewMessage"))["sub"] == "alice"
        assert await error_code(alice, "chat-room", "JoinRoom", {"room": "b"}) == "forbidden"


async def test_refresh_on_an_anonymous_connection_is_invalid_token() -> None:
    auth = AuthSettings(secret=SECRET, anonymous=True)
    async with (
        open_server(settings_for("s0", auth=auth)) as server,
        open_auth_client(server.ws) as anonymous,
    ):
        await anonymous.client.send("session", "Refresh", {"token": hs_token()})
        assert (await anonymous.client.expect("Error"))["code"] == "invalid_token"
        code = await error_code(anonymous.client, "chat-room", "JoinRoom", {"room": "x"})
        assert code == "forbidden"


async def test_refresh_with_auth_off_is_unknown_type() -> None:
    async with open_server(settings_for("s0")) as server, open_auth_client(server.ws) as conn:
        code = await error_code(conn.client, "session", "Refresh", {"token": "x"})
        assert code == "unknown_type"


async def test_member_records_on_the_memory_broker() -> None:
    async with (
        open_server(settings_for("s0", auth=AUTH)) as server,
        open_auth_client(server.ws, hs_token(claims(sub="bob"))) as bob,
        open_auth_client(server.ws, hs_token(claims(sub="al", info={"n": 1}))) as al,
    ):
        await bob.client.join("r")
        await bob.client.expect("JoinedRoom")
        await al.client.send("chat-room", "JoinRoom", {"room": "r"})
        members = (await al.client.expect("MemberList"))["members"]
        assert sorted(members, key=lambda m: str(m["sub"])) == [
            {"user": al.user, "sub": "al", "info": {"n": 1}},
            {"user": bob.user, "sub": "bob"},
        ]
