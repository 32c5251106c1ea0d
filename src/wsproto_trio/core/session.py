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
- over the rate limit a message is dropped with ``rate_limited``; a client that
  keeps pushing past the limit is told to go (``abusive``).

Plain synchronous code: the connection executes the returned action.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import assert_never

from ..config import RateLimit
from ..errors import AlreadyJoined, NotJoined
from . import messages
from .messages import (
    Hello,
    Identity,
    Inbound,
    JoinRoom,
    LeaveRoom,
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


Action = Publish | Join | Leave | Reply


@dataclass(slots=True)
class Session:
    user_id: str
    server_id: str
    history_size: int = 100
    rooms: set[str] = field(default_factory=set)
    identity: Identity = field(default_factory=dict)  # sub/info with authentication on

    def handle(self, message: Inbound) -> Action:
        match message:
            case SubmitMessage(content):
                return Publish(
                    messages.CHAT_CHANNEL,
                    messages.new_message_received(content, identity=self.identity),
                )
            case JoinRoom(room, since, history):
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
                if room not in self.rooms:
                    raise NotJoined(f"not a member of room {room!r}")
                return Publish(
                    messages.room_channel(room),
                    messages.new_message(room, self.user_id, text, self.identity),
                )
            case Hello():
                return Reply(messages.welcome(self.user_id, self.server_id))
            case _:
                assert_never(message)

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
