"""The websocket handshake's side of authentication: where the token comes from.

Rules (PROTOCOL.md section 8):
- the token is ``Authorization: Bearer <token>`` or, for clients that cannot
  set headers (browsers), the query parameter ``token``; the header wins when
  both are given;
- no token: anonymous when ``AUTH_ANONYMOUS`` is on, else refused ("missing
  token"); a token that is given is always checked, even in anonymous mode;
- a refusal is HTTP 401 with the reason; keys that cannot be fetched are 503.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from ..core.claims import Claims
from ..errors import KeysUnavailable, TokenRejected
from .verifier import Verifier

UNAUTHORIZED = 401
UNAVAILABLE = 503


def token_from(scope: dict[str, Any]) -> str | None:
    """The token the client gave, or ``None``; ``TokenRejected`` for a bad header."""
    header = _authorization(scope.get("headers", ()))
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRejected("malformed Authorization header: expected 'Bearer <token>'")
        return token.strip()
    query = scope.get("query_string", b"")
    text = query.decode("latin-1") if isinstance(query, bytes) else str(query)
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name == "token":
            return value or None
    return None


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return None


async def authenticate(verifier: Verifier, scope: dict[str, Any]) -> Claims | tuple[int, str]:
    """The connection's claims, or the refusal ``(status, reason)`` to answer with."""
    try:
        token = token_from(scope)
        if token is None:
            if verifier.settings.anonymous:
                return Claims.anonymous()
            raise TokenRejected("missing token")
        return await verifier.verify(token)
    except TokenRejected as exc:
        return UNAUTHORIZED, exc.reason
    except KeysUnavailable as exc:
        return UNAVAILABLE, str(exc)
