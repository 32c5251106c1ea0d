"""The client's errors: what ``open_client``, its methods and its iterator raise.

Misuse (joining a room twice, sending to a room not joined) is ``ValueError``.
"""

from __future__ import annotations

import trio


class ClientError(Exception):
    """Base of every error the client raises on purpose."""


class ConnectFailed(ClientError):
    """No server could be reached within the connect timeout (first connection)."""


class Rejected(ClientError):
    """A server refused the websocket handshake for good (400, 401, 403, 404).

    ``error`` is the ``error`` field of its JSON body when it had one."""

    def __init__(self, url: str, status: int, error: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {error}")
        self.url = url
        self.status = status
        self.error = error


class Closed(ClientError):
    """The server closed the connection with a code that forbids reconnecting (1008),
    or the client gave up reconnecting (``give_up_after``)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}" if code else f"closed: {reason}")
        self.code = code
        self.reason = reason


class JoinFailed(ClientError):
    """The server refused a ``JoinRoom`` for good (``forbidden``, ``invalid_room``...)."""

    def __init__(self, room: str, code: str, detail: str) -> None:
        super().__init__(f"cannot join {room!r}: {code}: {detail}")
        self.room = room
        self.code = code
        self.detail = detail


class ClientTimeout(ClientError, trio.TooSlowError):
    """A wait of the client (a join, a leave, a send while disconnected) ran out."""


class ConnectionLost(ClientError):
    """The connection dropped while a message was being sent: it may not have arrived.

    The client reconnects by itself; sending again may deliver the message twice."""
