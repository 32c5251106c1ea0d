"""Token verification: PyJWT checks the signature and times, ``core.claims`` the rest.

Rules:
- the key, and with it the allowed algorithms, come from the configuration
  (``auth.keys``); the token's header only picks a JWKS key by ``kid``;
- checks run in this order, and the first failure is the reason: the token's
  form, its algorithm, its key (JWKS), the signature, ``exp``/``nbf``/``iat``
  (with ``AUTH_LEEWAY``), ``aud``/``iss`` (only when configured), ``sub``, the
  shape of our claims;
- every failure is ``TokenRejected`` with a short readable reason that never
  holds the token; a JWKS that cannot be fetched is ``KeysUnavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import trio
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from ..config import AuthSettings
from ..core.claims import Claims, from_payload
from ..errors import TokenRejected
from .jwks import Fetch, JwksKeys
from .keys import VerificationKey, hmac_key, public_key

MAX_TOKEN_CHARS = 16 * 1024


class Verifier:
    """Verifies tokens against the one key source of ``AuthSettings``."""

    def __init__(
        self,
        auth: AuthSettings,
        *,
        clock: Callable[[], float] = trio.current_time,
        jwks_fetch: Fetch | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = auth
        self._wall_clock = wall_clock
        self._source: VerificationKey | JwksKeys
        if auth.secret is not None:
            self._source = hmac_key(auth.secret)
        elif auth.public_key is not None:
            self._source = public_key(auth.public_key)
        elif auth.jwks_url is not None:
            self._source = JwksKeys(auth.jwks_url, fetch=jwks_fetch, clock=clock)
        else:
            raise ValueError("AuthSettings without a key source")
        # The options never change: pinned algorithms, no warning path for short
        # keys (an exception instead), aud/iss only when configured, and sub
        # checked by our own rules (PyJWT's check differs between versions).
        self._options: dict[str, Any] = {
            "verify_signature": True,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": True,
            "verify_aud": auth.audience is not None,
            "verify_iss": auth.issuer is not None,
            "verify_sub": False,
            "verify_jti": False,
            "enforce_minimum_key_length": True,
        }

    async def verify(self, token: str) -> Claims:
        """The token's claims, or ``TokenRejected`` saying why not."""
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise TokenRejected("malformed token: its header has no 'alg'")
        if alg.lower() == "none":
            raise TokenRejected("algorithm 'none' is not allowed: tokens must be signed")
        key = await self._key_for(header)
        if alg not in key.algorithms:
            raise TokenRejected(
                f"algorithm {_short(alg)!r} is not allowed with the configured key "
                f"(allowed: {', '.join(key.algorithms)})"
            )
        payload = self._decode(token, key, alg)
        iat = payload.get("iat")
        leeway = self.settings.leeway
        if isinstance(iat, int | float) and iat > self._wall_clock() + leeway:
            raise TokenRejected("token not yet valid: 'iat' is in the future")
        return from_payload(payload)

    @property
    def jwks(self) -> JwksKeys | None:
        return self._source if isinstance(self._source, JwksKeys) else None

    async def _key_for(self, header: dict[str, Any]) -> VerificationKey:
        if isinstance(self._source, VerificationKey):
            return self._source
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token has no 'kid'; AUTH_JWKS_URL picks keys by kid")
        key = await self._source.key(kid)
        if key is None:
            raise TokenRejected(f"unknown key id (kid {_short(kid)!r} is not in the JWKS)")
        return key

    def _decode(self, token: str, key: VerificationKey, alg: str) -> dict[str, Any]:
        settings = self.settings
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                options=self._options,  # type: ignore[arg-type]  # a plain dict of known keys
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
            )
        except InvalidSignatureError:
            raise TokenRejected("bad signature: the token was signed with another key") from None
        except ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except ImmatureSignatureError as exc:
            which = "'iat' is in the future" if "iat" in str(exc) else "'nbf' is in the future"
            raise TokenRejected(f"token not yet valid: {which}") from None
        except InvalidAudienceError:
            raise TokenRejected("wrong audience: 'aud' does not name AUTH_AUDIENCE") from None
        except InvalidIssuerError:
            raise TokenRejected("wrong issuer: 'iss' is not AUTH_ISSUER") from None
        except MissingRequiredClaimError as exc:
            kind = {"aud": "wrong audience", "iss": "wrong issuer"}.get(exc.claim, "missing claim")
            raise TokenRejected(f"{kind}: the token has no {exc.claim!r}") from None
        except InvalidAlgorithmError:
            raise TokenRejected(f"algorithm {_short(alg)!r} is not allowed") from None
        except InvalidIssuedAtError:
            raise TokenRejected("claims of the wrong shape: 'iat' must be a number") from None
        except DecodeError as exc:
            raise TokenRejected(f"malformed token: {_short(str(exc))}") from None
        except InvalidKeyError as exc:
            reason = f"the configured key cannot verify it: {_short(str(exc))}"
            raise TokenRejected(reason) from None
        except InvalidTokenError as exc:
            raise TokenRejected(f"invalid token: {_short(str(exc))}") from None
        return payload


def _header(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token:
        raise TokenRejected("missing token")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected(f"malformed token: longer than {MAX_TOKEN_CHARS} characters")
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except DecodeError as exc:
        raise TokenRejected(f"malformed token: {_short(str(exc))}") from None
    return header


def _short(text: str) -> str:
    """At most 100 characters of ``text``: a header value or a library message."""
    return text if len(text) <= 100 else text[:97] + "..."
