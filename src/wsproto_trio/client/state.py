"""What one client knows and decides: streams, rooms, requests, recovery. No I/O.

Rules (PROTOCOL.md sections 4 and 7):
- streams: the chat and each room the application joined. Each remembers the
  position (offset, epoch) of the last message delivered. A message at or below
  it in the same epoch is a duplicate: dropped and counted. A server ``Lost``
  notice moves the position to what it names (the stream goes on after it).
- rooms: WANTED (to be joined on this connection), JOINING (request sent),
  JOINED, LEAVING (``LeaveRoom`` sent, waiting for our own ``LeftRoom``). A drop
  turns JOINING and JOINED back into WANTED, so every room is joined again on
  the next connection; LEAVING rooms are gone (the server drops memberships
  of a closed socket).
- recovery: a rejoin carries ``since`` = the room's position, a reconnect
  carries the chat's position in the URL. A client with no chat position yet
  asks with offset 0 of an epoch no stream has (``NO_EPOCH``): the answer is a
  ``Position`` without replay, so even a client that has seen nothing is gap-free
  after its first connection. ``recovered: false`` becomes a ``Lost`` event.
- answers are matched to requests by order: the server handles one connection's
  messages one at a time and answers each in turn. ``SubmitMessage`` and
  ``SendMessage`` answer only when they fail, so every batch of joins (or a
  ``Refresh``) is preceded by a ``Hello``: errors before its ``Welcome`` belong
  to earlier messages, and after it each join gets exactly one answer
  (``MemberList`` or ``Error``) in order. ``unavailable`` and ``rate_limited``
  retry the join with backoff; other codes drop the room.
- the first chat envelope of a connection that asked for the chat's position is
  ``Position``; an ``unavailable`` error in its place (the server could not read
  it) drops the connection, so that no chat message arrives without a position.
- our own ``LeftRoom`` that we did not ask for drops the connection too: the
  next one rejoins with ``since`` (or is told the room is now forbidden).
- ``Reconnected`` comes once every stream that was there before the drop has its
  outcome and every recovered stream's replay (offsets N+1..P) is delivered; a
  replay that stops short for ``request_timeout`` is reported with error
  ``timeout``. A room whose rejoin is being retried (``unavailable`` while the
  server's Redis is away) keeps the event waiting: it may still recover.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from ..core.backoff import Backoff
from .events import (
    ChatMessage,
    Connected,
    Disconnected,
    Error,
    Event,
    Expiring,
    Joined,
    Left,
    Lost,
    Member,
    MemberList,
    Other,
    Ping,
    Position,
    Reconnected,
    RoomMessage,
    StreamOutcome,
)
from .wire import Envelope, contents, envelope, kind

NO_EPOCH = "0"
"""Epoch asked for by a client without a chat position: well-formed, never a real one
(real epochs are random tokens), so the server answers with ``recovered: false``."""

TRANSIENT_JOIN_ERRORS = frozenset({"unavailable", "rate_limited"})
REFRESH_ERRORS = frozenset({"invalid_token", "invalid_message", "rate_limited"})


class Status(Enum):
    WANTED = "wanted"
    JOINING = "joining"
    JOINED = "joined"
    LEAVING = "leaving"


@dataclass(slots=True)
class Stream:
    """The position of one stream and its replay on the current connection."""

    room: str | None
    epoch: str | None = None
    offset: int = 0
    replay_to: int | None = None  # offsets up to this one are a replay
    replayed: int = 0  # replayed messages delivered on this connection
    outcome: StreamOutcome | None = None  # known once the server answered a recovery
    wait_replay: bool = False  # the outcome is final once the replay is in

    @property
    def position(self) -> Position | None:
        return None if self.epoch is None else Position(self.offset, self.epoch)

    def reset_connection(self) -> None:
        self.replay_to = None
        self.replayed = 0
        self.outcome = None
        self.wait_replay = False


@dataclass(slots=True)
class Room:
    name: str
    history: int | None = None
    status: Status = Status.WANTED
    stream: Stream = field(init=False)
    members: dict[str, Member] = field(default_factory=dict)
    member_list: MemberList | None = None
    leaving: bool = False  # leave() was called; LeaveRoom goes once it is joined
    since: Position | None = None  # what the join in flight asked to recover from
    retry_at: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.2, cap=2.0))

    def __post_init__(self) -> None:
        self.stream = Stream(self.name)


@dataclass(frozen=True, slots=True)
class Request:
    """A message whose answer is certain: ``Welcome`` or, for a join, ``MemberList``/``Error``."""

    what: Literal["hello", "join", "refresh"]
    room: str | None
    sent_at: float


@dataclass(slots=True)
class Stats:
    connections: int = 0
    reconnects: int = 0  # Reconnected events
    duplicates: int = 0  # messages dropped as already delivered
    gaps: int = 0  # positions that jumped without a Lost notice (a server bug if ever > 0)
    lost: int = 0  # Lost events
    replayed: int = 0
    unrecovered: int = 0  # streams whose recovery failed


@dataclass(slots=True)
class _Recovery:
    down_since: float
    pending: set[str | None] = field(default_factory=set)
    outcomes: dict[str | None, StreamOutcome] = field(default_factory=dict)
    deadline: float | None = None


ChatAsk = Literal["none", "since", "fresh", "history"]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _merge(old: StreamOutcome | None, new: StreamOutcome) -> StreamOutcome:
    """Outcomes of one stream over several attempts of one recovery: a failure sticks."""
    if old is None:
        return new
    recovered: bool | None
    if old.recovered is False or new.recovered is False:
        recovered = False
    else:
        recovered = new.recovered
    return StreamOutcome(
        new.room,
        recovered,
        old.replayed + new.replayed,
        new.lost or old.lost,
        new.error or old.error,
    )


class ClientState:
    """The client's rules; the I/O layer feeds it envelopes and sends what it returns."""

    def __init__(
        self,
        *,
        recover: bool = True,
        chat_history: int | None = None,
        request_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if chat_history is not None and chat_history < 1:
            raise ValueError("chat_history must be at least 1")
        self.recover = recover
        self.chat_history = chat_history
        self.request_timeout = request_timeout
        self._rng = rng or random.Random()
        self.chat = Stream(None)
        self.rooms: dict[str, Room] = {}
        self.failures: dict[str, Error] = {}  # rooms dropped by a join error, for join()
        self.stats = Stats()
        self.url = ""
        self.user: str | None = None
        self.server: str | None = None
        self.sub: str | None = None
        self.exp: float | None = None
        self.connected = False
        self.welcomed = False
        self.refresh_wanted = False
        self.drop_reason: str | None = None  # set when the connection must be dropped
        self._hello_sent = False
        self._chat_ask: ChatAsk = "none"
        self._requests: deque[Request] = deque()
        self._recovery: _Recovery | None = None

    # -- the application's requests ------------------------------------------------

    def join(self, room: str, history: int | None = None) -> None:
        if room in self.rooms:
            raise ValueError(f"room {room!r} is already joined (or being joined)")
        if history is not None and history < 1:
            raise ValueError("history must be at least 1")
        self.failures.pop(room, None)
        self.rooms[room] = Room(room, history, backoff=Backoff(base=0.2, cap=5.0, rng=self._rng))

    def leave(self, room: str) -> None:
        """Leave ``room``; a room not yet joined on the server is forgotten at once."""
        state = self.rooms.get(room)
        if state is None:
            raise ValueError(f"room {room!r} is not joined")
        if state.status is Status.WANTED:
            self._drop_room(room)
        else:
            state.leaving = True

    def forget(self, room: str) -> None:
        """Drop a room whose ``LeftRoom`` did not come in time."""
        if room in self.rooms:
            self._drop_room(room)

    def can_send(self, room: str) -> bool:
        state = self.rooms.get(room)
        return self.welcomed and state is not None and state.status is Status.JOINED

    def members(self, room: str) -> frozenset[str]:
        state = self.rooms.get(room)
        return frozenset(state.members) if state is not None else frozenset()

    def position(self, room: str | None = None) -> Position | None:
        if room is None:
            return self.chat.position
        state = self.rooms.get(room)
        return state.stream.position if state is not None else None

    # -- the connection's life -----------------------------------------------------

    def query(self) -> dict[str, str]:
        """The recovery parameters for the next connection's URL (call before ``opened``)."""
        params: dict[str, str] = {}
        self._chat_ask = "none"
        if self.recover:
            position = self.chat.position
            if position is None:
                params = {"chat_epoch": NO_EPOCH, "chat_offset": "0"}
                self._chat_ask = "fresh"
            else:
                params = {"chat_epoch": position.epoch, "chat_offset": str(position.offset)}
                self._chat_ask = "since"
            if self.chat_history is not None:
                params["chat_history"] = str(self.chat_history)
        elif self.chat_history is not None and self.stats.connections == 0:
            params = {"chat_history": str(self.chat_history)}
            self._chat_ask = "history"
        return params

    def opened(self, url: str, now: float) -> None:
        """A websocket to ``url`` is open (after ``query``)."""
        self.url = url
        self.connected = True
        self.drop_reason = None
        self.welcomed = False
        self._hello_sent = False
        self._requests.clear()
        self.stats.connections += 1
        self.chat.reset_connection()
        for room in self.rooms.values():
            room.stream.reset_connection()
        recovery = self._recovery
        if recovery is None:
            return
        # Rooms joined before the drop; a room the application joins meanwhile is new.
        recovery.pending = {r.name for r in self.rooms.values() if r.member_list is not None}
        recovery.deadline = None
        if self._chat_ask in ("since", "fresh"):
            recovery.pending.add(None)
        else:
            recovery.outcomes[None] = _merge(recovery.outcomes.get(None), StreamOutcome(None, None))

    def closed(self, code: int | None, reason: str, now: float) -> list[Event]:
        if not self.connected:
            return []
        self.connected = False
        was_welcomed = self.welcomed
        self.welcomed = False
        self._requests.clear()
        self.refresh_wanted = False
        for name, room in list(self.rooms.items()):
            if room.leaving:  # on the server until now; the close took us out
                self._drop_room(name)
                continue
            room.status = Status.WANTED
            room.retry_at = 0.0
            room.backoff.reset()
        if self._recovery is None and was_welcomed:
            self._recovery = _Recovery(down_since=now)
        return [Disconnected(self.url, code, reason)]

    def take_requests(self, now: float) -> list[Envelope]:
        """What to send now: leaves, then a ``Hello`` (the connection's first, or the
        barrier before joins), then the joins that are due."""
        if not self.connected:
            return []
        out: list[Envelope] = []
        for room in self.rooms.values():
            if room.leaving and room.status is Status.JOINED:
                room.status = Status.LEAVING
                out.append(envelope("chat-room", "LeaveRoom", {"room": room.name}))
        due = [
            r
            for r in self.rooms.values()
            if r.status is Status.WANTED and not r.leaving and r.retry_at <= now
        ]
        if due or not self._hello_sent:
            self._hello_sent = True
            out.append(self._hello(now))
        out.extend(self._join_request(room, now) for room in due)
        return out

    def take_refresh(self, token: str, now: float) -> list[Envelope]:
        """``Hello`` (the barrier) and ``Refresh`` carrying a new token."""
        self.refresh_wanted = False
        if not self.connected:
            return []
        hello = self._hello(now)
        self._requests.append(Request("refresh", None, now))
        return [hello, envelope("session", "Refresh", {"token": token})]

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do (a join to retry, an answer overdue)."""
        times = [r.retry_at for r in self.rooms.values() if r.status is Status.WANTED]
        if self._requests:
            times.append(self._requests[0].sent_at + self.request_timeout)
        if self._recovery is not None and self._recovery.deadline is not None:
            times.append(self._recovery.deadline)
        return min(times) if times else None

    def tick(self, now: float) -> tuple[list[Event], bool]:
        """Deadlines: returns events, and True when the connection must be dropped
        (a request got no answer within ``request_timeout``)."""
        if self._requests and now >= self._requests[0].sent_at + self.request_timeout:
            return [], True
        recovery = self._recovery
        if recovery is not None and recovery.deadline is not None and now >= recovery.deadline:
            # Replays that stopped short; streams still waiting for their join's
            # answer stay pending (a join retried during a Redis outage may yet recover).
            recovery.deadline = None
            for key in list(recovery.pending):
                stream = self.chat if key is None else self.rooms[key].stream
                if stream.outcome is None:
                    continue
                outcome = StreamOutcome(key, False, stream.replayed, stream.outcome.lost, "timeout")
                recovery.outcomes[key] = _merge(recovery.outcomes.get(key), outcome)
                recovery.pending.discard(key)
            return self._finish_if_done(now), False
        return [], False

    # -- what the server sends -----------------------------------------------------

    def receive(self, env: Envelope, now: float) -> list[Event]:
        """The events one envelope from the server makes (none for a duplicate)."""
        channel, type_ = kind(env)
        body = contents(env)
        fields: Mapping[str, Any] = body if isinstance(body, dict) else {}
        events: list[Event] | None = None
        match channel, type_:
            case "chat", "NewMessageReceived":
                events = self._chat_message(fields, now)
            case "chat-room", "NewMessage":
                events = self._room_message(fields, now)
            case "chat", "Position":
                events = self._chat_position(fields, now)
            case "chat-room", "MemberList":
                events = self._member_list(fields, now)
            case "chat-room", "JoinedRoom":
                events = self._joined(fields)
            case "chat-room", "LeftRoom":
                events = self._left(fields, now)
            case (("chat" | "chat-room"), "Lost"):
                events = self._lost(channel, fields)
            case "session", "Welcome":
                events = self._welcome(fields, now)
            case "session", "Expiring":
                exp = _number(fields.get("exp"))
                if exp is not None:
                    self.refresh_wanted = True
                    events = [Expiring(exp)]
            case "ping", "Ping":
                number = _int(body)
                if number is not None:
                    events = [Ping(number)]
            case "error", "Error":
                events = self._error(fields, now)
        return [Other(channel, type_, body)] if events is None else events

    # -- internals -------------------------------------------------------------------

    def _hello(self, now: float) -> Envelope:
        self._requests.append(Request("hello", None, now))
        return envelope("session", "Hello")

    def _join_request(self, room: Room, now: float) -> Envelope:
        body: dict[str, Any] = {"room": room.name}
        room.since = room.stream.position if self.recover else None
        if room.since is not None:
            body["since"] = {"offset": room.since.offset, "epoch": room.since.epoch}
        if room.history is not None and (room.since is not None or room.member_list is None):
            body["history"] = room.history
        room.status = Status.JOINING
        self._requests.append(Request("join", room.name, now))
        return envelope("chat-room", "JoinRoom", body)

    def _drop_room(self, name: str) -> None:
        del self.rooms[name]
        recovery = self._recovery
        if recovery is not None and name in recovery.pending:
            recovery.pending.discard(name)

    def _advance(self, stream: Stream, offset: int | None, epoch: str | None) -> bool | None:
        """Move the stream to a delivered message. None: a duplicate (drop it);
        otherwise whether the message is part of a replay."""
        if offset is None or epoch is None:
            return False  # a server without positions: nothing to check
        if stream.epoch == epoch and offset <= stream.offset:
            self.stats.duplicates += 1
            return None
        if stream.epoch is not None and (stream.epoch != epoch or offset > stream.offset + 1):
            self.stats.gaps += 1
        stream.epoch, stream.offset = epoch, offset
        replayed = stream.replay_to is not None and offset <= stream.replay_to
        if replayed:
            stream.replayed += 1
            self.stats.replayed += 1
        if stream.replay_to is not None and offset >= stream.replay_to:
            stream.replay_to = None
        return replayed

    def _chat_message(self, c: Mapping[str, Any], now: float) -> list[Event] | None:
        content, posted = _str(c.get("content")), _str(c.get("postedAt"))
        if content is None or posted is None:
            return None
        offset, epoch = _int(c.get("offset")), _str(c.get("epoch"))
        replayed = self._advance(self.chat, offset, epoch)
        if replayed is None:
            return []
        events: list[Event] = [
            ChatMessage(content, posted, offset, epoch, _str(c.get("sub")), replayed)
        ]
        return events + self._settle(None, now)

    def _room_message(self, c: Mapping[str, Any], now: float) -> list[Event] | None:
        name, user, text = _str(c.get("room")), _str(c.get("user")), _str(c.get("message"))
        if name is None or user is None or text is None:
            return None
        room = self.rooms.get(name)
        if room is None or room.status not in (Status.JOINED, Status.LEAVING):
            return None  # not ours: shown as Other
        offset, epoch = _int(c.get("offset")), _str(c.get("epoch"))
        replayed = self._advance(room.stream, offset, epoch)
        if replayed is None:
            return []
        events: list[Event] = [
            RoomMessage(name, user, text, offset, epoch, _str(c.get("sub")), replayed)
        ]
        return events + self._settle(name, now)

    def _start_stream(
        self,
        stream: Stream,
        top: int | None,
        epoch: str | None,
        since: Position | None,
        recovered: bool | None,
        history: bool,
        now: float,
    ) -> list[Event]:
        """Set a stream's position from a join's (or a connect's) answer: the stream
        is at ``top`` of ``epoch``; what comes next is the replay, then live traffic."""
        if top is None or epoch is None:
            return []
        events: list[Event] = []
        room = stream.room
        if since is not None and recovered:
            stream.replay_to = top if top > since.offset else None
            stream.outcome = StreamOutcome(room, True)
            stream.wait_replay = True
            if stream.replay_to is not None and self._recovery is not None:
                self._recovery.deadline = now + self.request_timeout
            return events
        if since is not None:
            lost = Lost(room, epoch, top, "recovery")
            events.append(lost)
            self.stats.lost += 1
            self.stats.unrecovered += 1
            stream.outcome = StreamOutcome(room, False, lost=lost)
            if history:
                floor = since.offset if since.epoch == epoch else 0
            else:
                floor = top
        else:
            floor = 0 if history else top
        stream.epoch, stream.offset = epoch, floor
        stream.replay_to = top if history and top > floor else None
        return events

    def _chat_position(self, c: Mapping[str, Any], now: float) -> list[Event] | None:
        top, epoch = _int(c.get("offset")), _str(c.get("epoch"))
        if top is None or epoch is None:
            return None
        ask, self._chat_ask = self._chat_ask, "none"
        history = self.chat_history is not None and ask != "none"
        recovering = self._recovery is not None and None in self._recovery.pending
        if ask == "since":
            since = self.chat.position
            events = self._start_stream(
                self.chat, top, epoch, since, c.get("recovered") is True, history, now
            )
        elif ask == "fresh" and recovering:
            # No position to recover from: whatever was said meanwhile may be missing.
            events = self._start_stream(
                self.chat, top, epoch, Position(0, NO_EPOCH), False, history, now
            )
        else:
            events = self._start_stream(self.chat, top, epoch, None, None, history, now)
        if recovering and self.chat.outcome is None:
            self.chat.outcome = StreamOutcome(None, None)
        return events + self._settle(None, now)

    def _member_list(self, c: Mapping[str, Any], now: float) -> list[Event] | None:
        name, users = _str(c.get("room")), c.get("users")
        if name is None or not isinstance(users, list):
            return None
        self._answered("join", name)
        room = self.rooms.get(name)
        if room is None or room.status is not Status.JOINING:
            return None
        members = {u: Member(u) for u in users if isinstance(u, str)}
        records = c.get("members")
        if isinstance(records, list):
            for record in records:
                if isinstance(record, dict) and isinstance(record.get("user"), str):
                    info = record.get("info")
                    members[record["user"]] = Member(
                        record["user"],
                        _str(record.get("sub")),
                        info if isinstance(info, dict) else None,
                    )
        top, epoch = _int(c.get("offset")), _str(c.get("epoch"))
        recovered = c.get("recovered")
        recovered = recovered if isinstance(recovered, bool) else None
        room.status = Status.JOINED
        room.members = members
        room.backoff.reset()
        room.member_list = MemberList(
            name, frozenset(members), top, epoch, recovered, tuple(members.values())
        )
        events: list[Event] = [room.member_list]
        since, room.since = room.since, None
        events += self._start_stream(
            room.stream, top, epoch, since, recovered is True, room.history is not None, now
        )
        if self._recovery is not None and name in self._recovery.pending:
            if room.stream.outcome is None:
                room.stream.outcome = StreamOutcome(name, None)
        return events + self._settle(name, now)

    def _joined(self, c: Mapping[str, Any]) -> list[Event] | None:
        name, user = _str(c.get("room")), _str(c.get("user"))
        if name is None or user is None:
            return None
        room = self.rooms.get(name)
        if room is None or room.status not in (Status.JOINED, Status.LEAVING):
            return None
        info = c.get("info")
        member = Member(user, _str(c.get("sub")), info if isinstance(info, dict) else None)
        room.members[user] = member
        return [Joined(name, user, member.sub, member.info)]

    def _left(self, c: Mapping[str, Any], now: float) -> list[Event] | None:
        name, user = _str(c.get("room")), _str(c.get("user"))
        if name is None or user is None:
            return None
        room = self.rooms.get(name)
        if room is None or room.status not in (Status.JOINED, Status.LEAVING):
            return None
        event = Left(name, user, _str(c.get("sub")))
        if user == self.user and room.status is Status.LEAVING:
            self._drop_room(name)  # our leave, acknowledged
            return [event, *self._finish_if_done(now)]
        if user == self.user:
            # The server took us out without our asking: a refreshed token no
            # longer allows the room, or presence lost us (a lease reaped while
            # we were connected). Which one, and what the server still delivers,
            # cannot be told from here: start over on a new connection, which
            # rejoins with ``since`` (recovering what this one missed) or learns
            # that the room is forbidden now.
            self.drop_reason = f"the server took us out of room {name!r}"
            return []
        room.members.pop(user, None)
        return [event]

    def _lost(self, channel: str, c: Mapping[str, Any]) -> list[Event] | None:
        offset, epoch = _int(c.get("offset")), _str(c.get("epoch"))
        if offset is None or epoch is None:
            return None
        if channel == "chat":
            stream = self.chat
        else:
            name = _str(c.get("room"))
            room = self.rooms.get(name) if name is not None else None
            if room is None:
                return None
            stream = room.stream
        stream.epoch, stream.offset = epoch, offset
        self.stats.lost += 1
        return [Lost(stream.room, epoch, offset, "notice")]

    def _welcome(self, c: Mapping[str, Any], now: float) -> list[Event]:
        self._answered("hello", None)
        user, server = _str(c.get("user")), _str(c.get("server"))
        if "sub" in c:
            self.sub = _str(c.get("sub"))
        if "exp" in c:
            self.exp = _number(c.get("exp"))
        if self.welcomed or user is None:
            return []
        self.welcomed = True
        self.user, self.server = user, server or ""
        events: list[Event] = [
            Connected(self.url, user, self.server, self.sub, self.exp, self.stats.connections > 1)
        ]
        return events + self._finish_if_done(now)

    def _error(self, c: Mapping[str, Any], now: float) -> list[Event]:
        code = _str(c.get("code")) or ""
        detail = _str(c.get("detail")) or ""
        head = self._requests[0] if self._requests else None
        if code == "unavailable" and self._chat_ask in ("since", "fresh"):
            # The server could not read the chat's position (its Redis is away) and
            # would go on without one: the stream would have an untold gap. Drop
            # this connection; the next one asks again.
            self.drop_reason = f"the chat could not be recovered: {detail}"
            return [Error(code, detail)]
        if head is not None and head.what == "refresh" and code in REFRESH_ERRORS:
            self._requests.popleft()
            return [Error(code, detail)]
        if head is None or head.what != "join" or head.room is None:
            return [Error(code, detail)]
        self._requests.popleft()
        name = head.room
        room = self.rooms.get(name)
        event = Error(code, detail, name)
        if room is None or room.status is not Status.JOINING:
            return [event]
        room.since = None
        if code in TRANSIENT_JOIN_ERRORS and not room.leaving:
            room.status = Status.WANTED
            room.retry_at = now + room.backoff.next_delay()
            return [event]
        self.failures[name] = event
        recovery = self._recovery
        if recovery is not None and name in recovery.pending:
            outcome = StreamOutcome(name, False, error=code)
            recovery.outcomes[name] = _merge(recovery.outcomes.get(name), outcome)
        self._drop_room(name)
        return [event, *self._finish_if_done(now)]

    def _answered(self, what: Literal["hello", "join"], room: str | None) -> None:
        """Remove the request this answer belongs to. A ``Hello`` before it that was
        never answered (it was rate-limited) is dropped too."""
        for index, request in enumerate(self._requests):
            if what == "hello" and request.what in ("hello", "refresh"):
                del self._requests[index]
                return
            if what == "join" and request.what == "join" and request.room == room:
                for _ in range(index + 1):
                    self._requests.popleft()
                return
            if what == "join" and request.what != "hello":
                return

    def _settle(self, key: str | None, now: float) -> list[Event]:
        """A stream's recovery is final once its outcome is known and its replay is in."""
        recovery = self._recovery
        if recovery is None or key not in recovery.pending:
            return []
        stream = self.chat if key is None else self.rooms[key].stream
        if stream.outcome is None or (stream.wait_replay and stream.replay_to is not None):
            return []
        outcome = stream.outcome
        if stream.wait_replay:
            outcome = StreamOutcome(key, outcome.recovered, stream.replayed, outcome.lost)
        recovery.outcomes[key] = _merge(recovery.outcomes.get(key), outcome)
        recovery.pending.discard(key)
        return self._finish_if_done(now)

    def _finish_if_done(self, now: float) -> list[Event]:
        recovery = self._recovery
        if recovery is None or recovery.pending or not self.welcomed:
            return []
        return self._finish_recovery(recovery, now)

    def _finish_recovery(self, recovery: _Recovery, now: float) -> list[Event]:
        self._recovery = None
        self.stats.reconnects += 1
        streams = tuple(
            sorted(recovery.outcomes.values(), key=lambda s: (s.room is not None, s.room or ""))
        )
        return [
            Reconnected(
                self.url,
                self.server or "",
                self.user or "",
                streams,
                max(0.0, now - recovery.down_since),
            )
        ]
