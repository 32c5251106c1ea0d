"""Authentication with JWTs (PROTOCOL.md section 8): the I/O edge of the claims rules.

``keys`` turns configured key material into keys with their pinned algorithms,
``jwks`` fetches and caches a JWKS document off the event loop's thread,
``verifier`` checks a token with PyJWT and returns ``core.claims.Claims``, and
``token`` is the ``wsproto-trio token`` command. The rules themselves (claim
shapes, room patterns, refresh, expiry timing) live in ``core.claims``.

This package imports no configuration at import time, so ``config`` may use
``keys`` to validate ``AUTH_JWT_PUBLIC_KEY`` up front.
"""
