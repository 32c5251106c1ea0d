"""What ``async for event in client`` yields: one frozen dataclass per kind of event.

Server envelopes become ``ChatMessage``, ``RoomMessage``, ``Joined``, ``Left``,
``MemberList``, ``Ping``, ``Error``, ``Lost`` and ``Expiring``; the connection's
own life is told by ``Connected`` (each ``Welcome`` of a new connection),
``Disconnected`` and ``Reconnected`` (once every stream is recovered, or known
not to be). ``Other`` carries what the client did not expect (an unknown
envelope, or room traffic for a room it is not in), so nothing is hidden.

Positions (``offset``, ``epoch``) are those of PROTOCOL.md section 7; they are
``None`` against a server without history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


class Position(NamedTuple):
    """A place in one stream: the last message seen is ``offset`` of ``epoch``."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room; ``sub`` and ``info`` only with authentication on."""

    user: str
    sub: str | None = None
    info: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open and the server said ``Welcome``."""

    url: str
    user: str
    server: str
    sub: str | None = None
    exp: float | None = None
    reconnect: bool = False


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost; the client reconnects by itself (unless it gave up)."""

    url: str
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """How one stream (the chat when ``room`` is None, else a room) came back.

    ``recovered``: True when every missed message was replayed; False when some
    may be missing (``lost`` says which); None when recovery was off. ``error``:
    the code that stopped a room from being joined again (it was dropped)."""

    room: str | None
    recovered: bool | None
    replayed: int = 0
    lost: Lost | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Every stream is back after a disconnection, each with its outcome.

    Replayed messages of recovered streams come before this event.
    ``down_for``: seconds from the disconnection to this event."""

    url: str
    server: str
    user: str
    streams: tuple[StreamOutcome, ...]
    down_for: float

    @property
    def recovered(self) -> bool:
        """True when every stream recovered everything missed (False with recovery off)."""
        return all(s.recovered is True and s.error is None for s in self.streams)

    @property
    def replayed(self) -> int:
        return sum(s.replayed for s in self.streams)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    content: str
    posted_at: str
    offset: int | None = None
    epoch: str | None = None
    sub: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RoomMessage:
    room: str
    user: str
    message: str
    offset: int | None = None
    epoch: str | None = None
    sub: str | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    user: str
    sub: str | None = None
    info: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class Left:
    room: str
    user: str
    sub: str | None = None


@dataclass(frozen=True, slots=True)
class MemberList:
    """The room's members at a join (also after each rejoin, replacing the old set).

    ``recovered`` is the server's answer to a rejoin with ``since`` (None on a
    first join or with recovery off)."""

    room: str
    users: frozenset[str]
    offset: int | None = None
    epoch: str | None = None
    recovered: bool | None = None
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class Ping:
    number: int


@dataclass(frozen=True, slots=True)
class Error:
    """An ``Error`` envelope. ``room`` is set when it answered a join of that room."""

    code: str
    detail: str
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Lost:
    """Messages of the stream before ``offset + 1`` of ``epoch`` may be missing.

    ``cause``: ``"notice"`` for the server's ``Lost`` envelope, ``"recovery"``
    when a rejoin or reconnect could not recover the stream."""

    room: str | None
    epoch: str
    offset: int
    cause: Literal["notice", "recovery"] = "notice"


@dataclass(frozen=True, slots=True)
class Expiring:
    """The token expires at ``exp``; a client with a token callable refreshes by itself."""

    exp: float


@dataclass(frozen=True, slots=True)
class Other:
    """An envelope the client does not turn into an event of its own."""

    channel: str
    type: str
    contents: Any = field(default=None, hash=False)


Event = (
    Connected
    | Disconnected
    | Reconnected
    | ChatMessage
    | RoomMessage
    | Joined
    | Left
    | MemberList
    | Ping
    | Error
    | Lost
    | Expiring
    | Other
)
