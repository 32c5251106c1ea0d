"""Test support for authentication: keys made in the test, tokens, JWKS documents.

Keys are generated with ``cryptography`` per test session (none is checked in);
tokens are signed with PyJWT, except the two forgeries PyJWT refuses to make
(``alg: none`` with a signature slot, HMAC keyed with a public key), which are
put together by hand here because that is what an attacker would do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from trio_websocket import ConnectionRejected, open_websocket_url

from .support import DEADLINE, Client

SECRET = "s3cret-" + "x" * 40  # 47 bytes: HS256 only (HS384 needs 48)
OTHER_SECRET = "other-" + "y" * 40

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@cache
def rsa_key(name: str = "rsa") -> rsa.RSAPrivateKey:
    """One 2048-bit key per name for the whole run (generating one takes ~0.1 s)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(name: str = "ec") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@cache
def ed_key(name: str = "ed") -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def claims(sub: str | None = "alice", ttl: float | None = 3600, **extra: Any) -> dict[str, Any]:
    now = time.time()
    payload: dict[str, Any] = {"iat": int(now)}
    if sub is not None:
        payload["sub"] = sub
    if ttl is not None:
        payload["exp"] = int(now + ttl)
    payload.update(extra)
    return payload


def hs_token(
    payload: dict[str, Any] | None = None, secret: str = SECRET, alg: str = "HS256"
) -> str:
    return jwt.encode(payload if payload is not None else claims(), secret, algorithm=alg)


def signed(
    key: PrivateKey,
    alg: str,
    payload: dict[str, Any] | None = None,
    kid: str | None = None,
) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(
        payload if payload is not None else claims(), key, algorithm=alg, headers=headers
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token PyJWT would not sign: ``alg: none``, or HMAC keyed with public key text."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    if hmac_key is None:
        return head + "."
    digest = hmac.new(hmac_key, head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(digest)


def jwk(key: PrivateKey, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    data["kid"] = kid
    data["use"] = "sig"
    if alg is not None:
        data["alg"] = alg
    return data


def jwks(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(entries)}


@dataclass
class JwksServer:
    """A JWKS document served over HTTP on 127.0.0.1 from a thread; swap ``document``."""

    document: dict[str, Any]
    requests: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def body(self) -> bytes:
        with self._lock:
            self.requests += 1
            return json.dumps(self.document).encode()


@contextmanager
def serve_jwks(document: dict[str, Any]) -> Iterator[JwksServer]:
    state = JwksServer(document)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# Websocket clients with tokens ----------------------------------------------------


@dataclass
class AuthClient:
    """A ``support.Client`` and the ``Welcome`` it got (``sub``/``exp`` with auth on)."""

    client: Client
    welcome: dict[str, Any]

    @property
    def user(self) -> str:
        return self.client.user


def ws_url(base: str, token: str | None, query: str = "") -> str:
    parts = [query] if query else []
    if token is not None:
        parts.append("token=" + urllib.parse.quote(token, safe=""))
    return base + ("?" + "&".join(parts) if parts else "")


@asynccontextmanager
async def open_auth_client(
    base: str, token: str | None = None, *, header: bool = False
) -> AsyncIterator[AuthClient]:
    """A client giving ``token`` in the query (default) or as ``Authorization: Bearer``."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if header and token else None
    url = ws_url(base, None if header else token)
    async with open_websocket_url(
        url, extra_headers=headers, connect_timeout=DEADLINE, disconnect_timeout=DEADLINE
    ) as ws:
        client = Client(ws)
        await client.send("session", "Hello")
        earlier: list[dict[str, Any]] = []  # an Expiring due at once may come first
        while (envelope := await client.receive())["message"]["type"] != "Welcome":
            earlier.append(envelope)
        client.pending[:0] = earlier
        welcome: dict[str, Any] = envelope["message"]["contents"]
        client.user = welcome["user"]
        yield AuthClient(client, welcome)


async def rejection(
    base: str, token: str | None = None, *, header: bool = False
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused handshake (fails if it is accepted)."""
    headers = [(b"authorization", f"Bearer {token}".encode())] if header and token else None
    with trio.fail_after(DEADLINE):
        try:
            async with open_websocket_url(
                ws_url(base, None if header else token),
                extra_headers=headers,
                connect_timeout=DEADLINE,
                disconnect_timeout=DEADLINE,
            ):
                pass
        except ConnectionRejected as exc:
            body = json.loads(exc.body or b"{}")
            assert isinstance(body, dict)
            return exc.status_code, body
    raise AssertionError("the handshake was accepted")
