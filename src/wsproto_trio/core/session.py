"""Session rules: what one connection's inbound message means.

Rules (PROTOCOL.md sections 4 and 7):
- ``SubmitMessage`` publishes ``NewMessageReceived`` to the ``chat`` channel;
- ``JoinRoom`` a room already joined (or being joined) is ``already_joined``;
- ``SendMessage``/``LeaveRoom`` outside the room is ``not_joined``;
- a room counts as joined from the moment the join is decided here, so a second
  ``JoinRoom`` racing the first is refused; if the join then fails (broker
  unavailable) the caller calls ``forget``. The session is the one owner of the
  set of rooms a connection is in;
- ``JoinRoom`` may carry a recovery point (``since``) and/or ``history``;
  ``history`` beyond ``HISTORY_SIZE`` counts as ``HISTORY_SIZE``;
- with authentication on (``claims`` set, section 8), a ``JoinRoom``,
  ``SendMessage`` or ``SubmitMessage`` the claims do not allow is ``forbidden``:
  after the shape and room-name checks (done by ``messages.decode``), before
  the membership checks; ``Refresh`` hands the token to the connection to
  verify, and ``refresh`` then applies the new claims (``core.claims.refresh``);
  with authentication off ``Refresh`` is an unknown type;
- the identity fields (``sub``, ``info``, ``exp``) come from the claims, and
  are empty with authentication off, so that none of them appear;
- over the rate limit a message is dropped with ``rate_limited``; a client that
  keeps pushing past the limit is told to go (``abusive``).

Plain synchronous code: the connection executes the returned action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import assert_never

from ..config import RateLimit
from ..errors import AlreadyJoined, Forbidden, NotJoined, UnknownType
from . import claims as rules
from . import messages
from .claims import Claims
from .messages import (
    Hello,
    Identity,
    Inbound,
    JoinRoom,
    LeaveRoom,
    Refresh,
    SendMessage,
    SubmitMessage,
    Template,
)
from .positions import Position


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``message`` on ``channel``'s stream (it gets the next position)."""

    channel: str
    message: Template


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: Position | None = None
    history: int | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``payload`` to this client only."""

    payload: str


@dataclass(frozen=True, slots=True)
class Reauthenticate:
    """Verify ``token``, then call ``Session.refresh`` with its claims."""

    token: str = field(repr=False)


Action = Publish | Join | Leave | Reply | Reauthenticate


@dataclass(slots=True)
class Session:
    user_id: str
    server_id: str
    history_size: int = 100
    claims: Claims | None = None  # None: authentication is off
    rooms: set[str] = field(default_factory=set)
    identity: Identity = field(default_factory=dict)  # sub with authentication on
    profile: Identity = field(default_factory=dict)  # sub and info with authentication on

    def __post_init__(self) -> None:
        self._take(self.claims)

    def _take(self, claims: Claims | None) -> None:
        self.claims = claims
        self.identity = claims.subject() if claims is not None else {}
        self.profile = claims.profile() if claims is not None else {}

    def handle(self, message: Inbound) -> Action:
        claims = self.claims
        match message:
            case SubmitMessage(content):
                if claims is not None and not claims.may_chat():
                    raise Forbidden("your token does not allow posting to the chat")
                return Publish(
                    messages.CHAT_CHANNEL,
                    messages.new_message_received(content, identity=self.identity),
                )
            case JoinRoom(room, since, history):
                if claims is not None and not claims.may_join(room):
                    raise Forbidden(f"your token does not allow joining room {room!r}")
                if room in self.rooms:
                    raise AlreadyJoined(f"already a member of room {room!r}")
                self.rooms.add(room)
                if history is not None:
                    history = min(history, self.history_size)
                return Join(room, since, history)
            case LeaveRoom(room):
                if room not in self.rooms:
                    raise NotJoined(f"not a member of room {room!r}")
                self.rooms.discard(room)
                return Leave(room)
            case SendMessage(room, text):
                if claims is not None and not claims.may_send(room):
                    raise Forbidden(f"your token does not allow sending to room {room!r}")
                if room not in self.rooms:
                    raise NotJoined(f"not a member of room {room!r}")
                return Publish(
                    messages.room_channel(room),
                    messages.new_message(room, self.user_id, text, self.identity),
                )
            case Hello():
                return Reply(self.welcome())
            case Refresh(token):
                if claims is None:
                    raise UnknownType("Refresh needs authentication, which is off on this server")
                return Reauthenticate(token)
            case _:
                assert_never(message)

    def welcome(self) -> str:
        extra: Identity = {}
        if self.claims is not None:
            extra = {"sub": self.claims.sub, "exp": self.claims.exp}
        return messages.welcome(self.user_id, self.server_id, extra)

    def refresh(self, new: Claims) -> list[str]:
        """Take ``new`` claims; the rooms to leave now, already out of ``rooms``.

        ``InvalidToken`` (nothing changes) for another subject or an anonymous
        connection.
        """
        if self.claims is None:
            raise UnknownType("Refresh needs authentication, which is off on this server")
        leave = rules.refresh(self.claims, new, self.rooms)
        self._take(new)
        self.rooms.difference_update(leave)
        return leave

    def forget(self, room: str) -> None:
        """Undo a join that did not happen."""
        self.rooms.discard(room)


class Verdict(Enum):
    ALLOW = "allow"
    LIMITED = "limited"
    ABUSIVE = "abusive"


@dataclass(slots=True)
class RateLimiter:
    """Two token buckets: one for messages, one for refusals.

    Each accepted message takes a token from the first bucket (``rate`` a second,
    ``burst`` deep). Each refused message takes one from the second bucket (same
    size and rate): a client sending at more than twice the limit empties it in
    about ``burst / rate`` seconds and is then ``ABUSIVE`` (closed with 1008),
    while a client that merely bursts over the limit now and then never is.
    """

    limit: RateLimit
    now: float
    tokens: float = field(init=False)
    strikes: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.limit.burst
        self.strikes = self.limit.burst
        self.updated = self.now

    def check(self, now: float) -> Verdict:
        if not self.limit.enabled:
            return Verdict.ALLOW
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        refill = elapsed * self.limit.rate
        self.tokens = min(self.limit.burst, self.tokens + refill)
        self.strikes = min(self.limit.burst, self.strikes + refill)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Verdict.ALLOW
        self.strikes -= 1.0
        return Verdict.ABUSIVE if self.strikes < 0 else Verdict.LIMITED
