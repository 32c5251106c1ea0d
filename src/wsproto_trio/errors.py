"""The one exception hierarchy of the project.

Protocol errors carry the wire code that PROTOCOL.md section 5 assigns them, so
the connection can turn any of them into an ``Error`` envelope without a table
lookup. Broker errors are what every broker raises, whatever the backend: the
Redis broker translates redis-py's exceptions into these in one place.
"""

from __future__ import annotations


class WsprotoTrioError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(WsprotoTrioError):
    """A setting is invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ProtocolError(WsprotoTrioError):
    """A client message was refused; ``code`` is the wire code."""

    code = "invalid_message"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidJson(ProtocolError):
    code = "invalid_json"


class InvalidMessage(ProtocolError):
    code = "invalid_message"


class UnknownChannel(ProtocolError):
    code = "unknown_channel"


class UnknownType(ProtocolError):
    code = "unknown_type"


class InvalidRoom(ProtocolError):
    code = "invalid_room"


class NotJoined(ProtocolError):
    code = "not_joined"


class AlreadyJoined(ProtocolError):
    code = "already_joined"


class UnsupportedFrame(ProtocolError):
    code = "unsupported_frame"


class RateLimited(ProtocolError):
    code = "rate_limited"


class Unavailable(ProtocolError):
    """The broker could not take the message; it was not delivered."""

    code = "unavailable"


class BrokerUnavailable(WsprotoTrioError):
    """The broker is unreachable right now; the operation did not happen."""


class Forbidden(ProtocolError):
    """The connection's token does not allow this ``JoinRoom``/``SendMessage``/``SubmitMessage``."""

    code = "forbidden"


class InvalidToken(ProtocolError):
    """A ``Refresh`` whose token is invalid or names another subject; nothing changed."""

    code = "invalid_token"


class TokenRejected(WsprotoTrioError):
    """A token failed verification; ``reason`` is readable and never holds the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(WsprotoTrioError):
    """The verification keys (a JWKS document) could not be fetched: not the token's fault."""
