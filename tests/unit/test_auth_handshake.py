"""auth.handshake: the token from the header or the query, anonymous mode, refusals."""

from __future__ import annotations

from typing import Any

import pytest
from tests.jwt_support import SECRET, claims, hs_token, rsa_key, signed

from wsproto_trio.auth.handshake import authenticate, token_from
from wsproto_trio.auth.verifier import Verifier
from wsproto_trio.config import AuthSettings
from wsproto_trio.core.claims import Claims
from wsproto_trio.errors import TokenRejected


def scope(query: str = "", authorization: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"example")]
    if authorization is not None:
        headers.append((b"Authorization", authorization.encode("latin-1")))
    return {"query_string": query.encode("latin-1"), "headers": headers}


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        ("", None, None),
        ("token=abc", None, "abc"),
        ("chat_history=5&token=abc", None, "abc"),
        ("token=a%2Eb%2Ec", None, "a.b.c"),
        ("token=", None, None),
        ("tokens=abc", None, None),
        ("", "Bearer abc", "abc"),
        ("", "bearer  abc ", "abc"),
        ("token=query", "Bearer header", "header"),  # the header wins
    ],
)
def test_token_from(query: str, header: str | None, expected: str | None) -> None:
    assert token_from(scope(query, header)) == expected


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "abc"])
def test_malformed_authorization_header(header: str) -> None:
    with pytest.raises(TokenRejected, match="Authorization header"):
        token_from(scope(authorization=header))


async def test_authenticate() -> None:
    verifier = Verifier(AuthSettings(secret=SECRET))
    result = await authenticate(verifier, scope(f"token={hs_token()}"))
    assert isinstance(result, Claims) and result.sub == "alice"
    assert await authenticate(verifier, scope()) == (401, "missing token")
    by_header = await authenticate(verifier, scope(authorization=f"Bearer {hs_token()}"))
    assert isinstance(by_header, Claims) and by_header.sub == "alice"
    refused = await authenticate(verifier, scope(authorization="Bearer x.y.z"))
    assert isinstance(refused, tuple) and refused[0] == 401
    assert refused[1].startswith("malformed token")


async def test_anonymous_mode() -> None:
    verifier = Verifier(AuthSettings(secret=SECRET, anonymous=True))
    result = await authenticate(verifier, scope())
    assert isinstance(result, Claims) and result.is_anonymous
    # A token that is given is checked all the same: no fallback to anonymous.
    expired = hs_token(claims(ttl=-60))
    assert await authenticate(verifier, scope(f"token={expired}")) == (401, "token expired")


async def test_jwks_unavailable_is_503(tmp_path: Any) -> None:
    verifier = Verifier(AuthSettings(jwks_url=(tmp_path / "missing.json").as_uri()))
    result = await authenticate(verifier, scope("token=" + signed(rsa_key(), "RS256", kid="k")))
    assert isinstance(result, tuple)
    assert result[0] == 503 and "JWKS" in result[1]
