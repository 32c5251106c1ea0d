"""Authentication at the handshake, on real servers: every 401, each key kind, JWKS, anonymous."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from wsproto_trio.auth.verifier import Verifier
from wsproto_trio.config import AuthSettings

from ..jwt_support import (
    OTHER_SECRET,
    SECRET,
    PrivateKey,
    claims,
    ec_key,
    ed_key,
    forged,
    hs_token,
    jwk,
    jwks,
    open_auth_client,
    public_pem,
    rejection,
    rsa_key,
    serve_jwks,
    signed,
)
from ..support import RunningServer, open_server, settings_for


@asynccontextmanager
async def auth_server(**auth: Any) -> AsyncIterator[RunningServer]:
    async with open_server(settings_for("s0", auth=AuthSettings(**auth))) as server:
        yield server


def now() -> int:
    return int(time.time())


REFUSALS: list[tuple[str, str, str]] = [
    # (case, token, reason prefix), all against the HS256 server with audience and issuer
    ("malformed", "not-a-jwt", "malformed token"),
    ("bad signature", hs_token(claims(aud="chat", iss="me"), secret=OTHER_SECRET), "bad signature"),
    ("alg none", forged({"alg": "none"}, claims(aud="chat", iss="me"), None), "algorithm 'none'"),
    ("expired", hs_token(claims(ttl=-60, aud="chat", iss="me")), "token expired"),
    ("nbf", hs_token(claims(nbf=now() + 600, aud="chat", iss="me")), "token not yet valid"),
    ("iat", hs_token(claims(iat=now() + 600, aud="chat", iss="me")), "token not yet valid"),
    ("wrong aud", hs_token(claims(aud="other", iss="me")), "wrong audience"),
    ("no aud", hs_token(claims(iss="me")), "wrong audience"),
    ("wrong iss", hs_token(claims(aud="chat", iss="evil")), "wrong issuer"),
    ("no sub", hs_token(claims(sub=None, aud="chat", iss="me")), "no valid sub"),
    ("bad rooms", hs_token(claims(aud="chat", iss="me", rooms="x")), "claims of the wrong shape"),
    ("big info", hs_token(claims(aud="chat", iss="me", info={"x": "y" * 2000})), "claims of the"),
]


async def test_every_refusal_is_401_with_its_reason() -> None:
    async with auth_server(secret=SECRET, audience="chat", issuer="me") as server:
        assert await rejection(server.ws) == (401, {"error": "missing token"})
        for case, token, reason in REFUSALS:
            for header in (False, True):
                status, body = await rejection(server.ws, token, header=header)
                assert status == 401, case
                assert body["error"].startswith(reason), (case, body)
        good = hs_token(claims(aud=["x", "chat"], iss="me"))
        async with open_auth_client(server.ws, good) as alice:
            assert alice.welcome["sub"] == "alice"


async def test_no_websocket_after_a_refusal() -> None:
    async with auth_server(secret=SECRET) as server:
        await rejection(server.ws, "nope")
        assert len(server.app.hub.connections) == 0


async def test_hmac_signed_with_the_public_key_is_refused() -> None:
    pem = public_pem(rsa_key())
    async with auth_server(public_key=pem) as server:
        token = forged({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
        status, body = await rejection(server.ws, token)
        assert status == 401 and "'HS256' is not allowed" in body["error"]
        token = forged({"alg": "none"}, claims(), None)
        assert (await rejection(server.ws, token))[0] == 401


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("rsa", "RS256"), ("rsa", "PS256"), ("ec", "ES256"), ("ed", "EdDSA")],
)
async def test_public_key_kinds(kind: str, alg: str) -> None:
    makers: dict[str, Callable[[], PrivateKey]] = {"rsa": rsa_key, "ec": ec_key, "ed": ed_key}
    key = makers[kind]()
    async with auth_server(public_key=public_pem(key)) as server:
        token = signed(key, alg, claims(sub=f"{kind}-user"))
        for header in (False, True):
            async with open_auth_client(server.ws, token, header=header) as client:
                assert client.welcome["sub"] == f"{kind}-user"
        other = makers[{"rsa": "ec", "ec": "ed", "ed": "rsa"}[kind]]()
        other_alg = {"rsa": "ES256", "ec": "EdDSA", "ed": "RS256"}[kind]
        status, body = await rejection(server.ws, signed(other, other_alg))
        assert status == 401 and "not allowed" in body["error"]


async def test_hs256_welcome_has_sub_and_exp() -> None:
    async with auth_server(secret=SECRET) as server:
        payload = claims()
        async with open_auth_client(server.ws, hs_token(payload), header=True) as alice:
            assert alice.welcome == {
                "user": alice.user,
                "server": "s0",
                "sub": "alice",
                "exp": payload["exp"],
            }
        async with open_auth_client(server.ws, hs_token(claims(ttl=None))) as forever:
            assert forever.welcome["exp"] is None


async def test_header_wins_over_query() -> None:
    async with auth_server(secret=SECRET) as server:
        query = "token=" + hs_token(claims(sub="from-query"))
        headers = [(b"authorization", f"Bearer {hs_token(claims(sub='from-header'))}".encode())]
        from trio_websocket import open_websocket_url

        from ..support import Client

        async with open_websocket_url(f"{server.ws}?{query}", extra_headers=headers) as ws:
            client = Client(ws)
            await client.send("session", "Hello")
            assert (await client.expect("Welcome"))["sub"] == "from-header"


async def test_jwks_file_with_rotation(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(jwk(rsa_key("old"), "old"))))
    offset = [0.0]
    async with auth_server(jwks_url=path.as_uri()) as server:
        settings = server.app.settings.auth
        assert settings is not None
        server.app.verifier = Verifier(settings, clock=lambda: trio.current_time() + offset[0])
        async with open_auth_client(server.ws, signed(rsa_key("old"), "RS256", kid="old")) as c:
            assert c.welcome["sub"] == "alice"
        path.write_text(json.dumps(jwks(jwk(ec_key("new"), "new"))))
        new_token = signed(ec_key("new"), "ES256", claims(sub="bob"), kid="new")
        status, body = await rejection(server.ws, new_token)  # within 10 s: not refetched
        assert status == 401 and "unknown key id" in body["error"]
        offset[0] += 10
        async with open_auth_client(server.ws, new_token) as bob:
            assert bob.welcome["sub"] == "bob"
        assert server.app.verifier.jwks is not None
        assert server.app.verifier.jwks.fetches == 2


async def test_jwks_http_with_rotation() -> None:
    offset = [0.0]
    with serve_jwks(jwks(jwk(rsa_key("old"), "old"))) as idp:
        async with auth_server(jwks_url=idp.url, issuer="idp") as server:
            settings = server.app.settings.auth
            assert settings is not None
            server.app.verifier = Verifier(settings, clock=lambda: trio.current_time() + offset[0])
            old = signed(rsa_key("old"), "RS256", claims(iss="idp"), kid="old")
            async with open_auth_client(server.ws, old, header=True):
                pass
            idp.document = jwks(jwk(rsa_key("old"), "old"), jwk(ed_key("new"), "new"))
            new = signed(ed_key("new"), "EdDSA", claims(sub="bob", iss="idp"), kid="new")
            assert (await rejection(server.ws, new))[0] == 401
            assert (await rejection(server.ws, new))[0] == 401
            assert idp.requests == 1
            offset[0] += 10
            async with open_auth_client(server.ws, new) as bob:
                assert bob.welcome["sub"] == "bob"
            assert idp.requests == 2


async def test_jwks_unreachable_is_503(tmp_path: Path) -> None:
    async with auth_server(jwks_url=(tmp_path / "none.json").as_uri()) as server:
        status, body = await rejection(server.ws, signed(rsa_key(), "RS256", kid="k"))
        assert status == 503 and "JWKS" in body["error"]


async def test_anonymous_mode() -> None:
    async with auth_server(secret=SECRET, anonymous=True) as server:
        async with (
            open_auth_client(server.ws) as anonymous,
            open_auth_client(server.ws, hs_token()) as alice,
        ):
            assert anonymous.welcome["sub"] is None and anonymous.welcome["exp"] is None
            reader = anonymous.client
            for kind, channel, contents in [
                ("JoinRoom", "chat-room", {"room": "lobby"}),
                ("SendMessage", "chat-room", {"room": "lobby", "message": "hi"}),
                ("SubmitMessage", "chat", "hello"),
            ]:
                await reader.send(channel, kind, contents)
                assert (await reader.expect("Error"))["code"] == "forbidden", kind
            # It still reads the chat, and pings.
            await alice.client.send("chat", "SubmitMessage", "hello all")
            received = await reader.expect("NewMessageReceived")
            assert received["content"] == "hello all" and received["sub"] == "alice"
            assert (await server.get("/ping1"))[0] == 200
            assert await reader.expect("Ping") == 1
            # A bad token is still refused: anonymous is for clients without one.
            assert (await rejection(server.ws, "bad"))[0] == 401
