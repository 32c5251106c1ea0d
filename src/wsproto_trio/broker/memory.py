"""The in-process broker: one process, no Redis.

A ``MemoryNetwork`` stands for one Redis: every ``MemoryBroker`` made from the
same network is a server of one cluster, which is how the contract tests run
several servers without Redis. A server started without ``REDIS_URL`` gets a
network of its own.

It keeps the same rules as the Redis broker: streams with positions, the latest
``history_size`` messages, expiry ``history_ttl`` after a stream's last message
(its epoch then changes), and presence with leases: a broker renews its lease
every ``presence_ttl / 3`` while it serves, and reaps the members of brokers
whose lease lapsed (a broker whose task was cancelled without ``deregister``
is a crashed server).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field

import trio

from ..core import messages
from ..core.messages import Template
from ..core.positions import Position, StreamState, frame
from ..core.presence import PresenceTable
from . import BrokerStatus, Joined, Listener, Member


@dataclass(slots=True)
class _Stream:
    epoch: str
    expires: float
    top: int = 0
    log: deque[str] = field(default_factory=deque)


class MemoryNetwork:
    def __init__(self, *, history_size: int = 100, history_ttl: float = 300.0) -> None:
        self.presence = PresenceTable()
        self.members: dict[tuple[str, str], Member] = {}  # (room, user) -> member
        self.subscribers: dict[str, set[MemoryBroker]] = {}
        self.brokers: set[MemoryBroker] = set()
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._streams: dict[str, _Stream] = {}

    def publish(self, channel: str, payload: str) -> int:
        receivers = list(self.subscribers.get(channel, ()))
        for broker in receivers:
            broker.receive(channel, payload)
        return len(receivers)

    def numsub(self, channel: str) -> int:
        return len(self.subscribers.get(channel, ()))

    # -- streams ------------------------------------------------------------------

    def stream(self, channel: str) -> _Stream:
        """The stream, made anew (new epoch, nothing kept) once it has expired."""
        now = trio.current_time()
        self.expire(now)
        stream = self._streams.get(channel)
        if stream is None:
            stream = _Stream(secrets.token_urlsafe(9), now + self.history_ttl)
            stream.log = deque(maxlen=self.history_size)
            self._streams[channel] = stream
        return stream

    def expire(self, now: float) -> None:
        for channel in [c for c, s in self._streams.items() if s.expires <= now]:
            del self._streams[channel]

    def stream_count(self) -> int:
        self.expire(trio.current_time())
        return len(self._streams)

    def append(self, channel: str, message: Template) -> tuple[Position, str]:
        stream = self.stream(channel)
        stream.top += 1
        stream.expires = trio.current_time() + self.history_ttl
        text = message.fill(stream.top, stream.epoch)
        if self.history_size:
            stream.log.append(text)
        return Position(stream.top, stream.epoch), text

    def state(self, channel: str, with_log: bool) -> StreamState:
        stream = self.stream(channel)
        log = tuple(stream.log) if with_log else ()
        return StreamState(Position(stream.top, stream.epoch), log)

    # -- presence -----------------------------------------------------------------

    def remove(self, room: str, user: str, owner: str) -> bool:
        if self.presence.rooms.get(room, {}).get(user) != owner:
            return False
        self.presence.leave(room, user)
        member = self.members.pop((room, user))
        self.publish(messages.room_channel(room), member.left)
        return True

    def reap(self, server: str, now: float | None) -> None:
        for room, user in self.presence.reap(server, now):
            member = self.members.pop((room, user), None)
            if member is not None:
                self.publish(messages.room_channel(room), member.left)


class MemoryBroker:
    name = "memory"

    def __init__(
        self, server_id: str, network: MemoryNetwork | None = None, presence_ttl: float = 15.0
    ) -> None:
        self.server_id = server_id
        self.network = network if network is not None else MemoryNetwork()
        self.presence_ttl = presence_ttl
        self._listener: Listener | None = None
        self._deregistered = False

    async def serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._listener = listener
        self.network.brokers.add(self)
        network = self.network
        try:
            self._renew()
            task_status.started()
            while True:
                await trio.sleep(self.presence_ttl / 3)
                if self._deregistered:
                    continue
                if not self._renew():
                    # Reaped while it was away (a paused server): join again.
                    self._reregister()
                now = trio.current_time()
                for server in network.presence.expired(now):
                    if server != self.server_id:
                        network.reap(server, now)
                network.expire(now)
        finally:
            # Like a crashed process: the lease stays until it lapses and
            # another broker reaps its members (a clean exit deregisters first).
            self._listener = None
            network.brokers.discard(self)
            for subscribers in network.subscribers.values():
                subscribers.discard(self)

    def _renew(self) -> bool:
        count = self._listener.connection_count if self._listener is not None else 0
        return self.network.presence.renew(
            self.server_id, trio.current_time(), self.presence_ttl, count
        )

    def _reregister(self) -> None:
        if self._listener is None:
            return
        for member in self._listener.local_members():
            self._add(member)
            self.network.publish(messages.room_channel(member.room), member.joined)

    def _add(self, member: Member) -> list[str]:
        self.network.members[(member.room, member.user)] = member
        return self.network.presence.join(member.room, member.user, self.server_id)

    def status(self) -> BrokerStatus:
        up = self._listener is not None
        return BrokerStatus(
            connected=up, ready=up, reason=None if up else "not started", reconnects=0
        )

    def receive(self, channel: str, payload: str) -> None:
        if self._listener is not None:
            self._listener.deliver(((channel, payload),))

    async def publish(self, channel: str, payload: str) -> None:
        await trio.lowlevel.checkpoint()
        self.network.publish(channel, payload)

    async def publish_message(self, channel: str, message: Template) -> Position:
        await trio.lowlevel.checkpoint()
        position, text = self.network.append(channel, message)
        self.network.publish(channel, frame(position, text))
        return position

    async def stream(self, channel: str, *, with_log: bool) -> StreamState:
        await trio.lowlevel.checkpoint()
        return self.network.state(channel, with_log)

    async def subscribe(self, channel: str) -> None:
        await trio.lowlevel.checkpoint()
        self.network.subscribers.setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        await trio.lowlevel.checkpoint()
        subscribers = self.network.subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self.network.subscribers[channel]

    async def join(self, member: Member, *, with_log: bool) -> Joined:
        await trio.lowlevel.checkpoint()
        users = self._add(member)
        self.network.publish(messages.room_channel(member.room), member.joined)
        records = [self.network.members[(member.room, u)].record for u in users]
        state = self.network.state(messages.room_channel(member.room), with_log)
        return Joined(users=users, records=records, stream=state)

    async def leave(self, member: Member) -> bool:
        await trio.lowlevel.checkpoint()
        return self.network.remove(member.room, member.user, self.server_id)

    async def members(self, room: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return self.network.presence.members(room)

    async def rooms(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return self.network.presence.room_counts()

    async def servers(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return {
            broker.server_id: broker._listener.connection_count
            for broker in self.network.brokers
            if broker._listener is not None and not broker._deregistered
        }

    async def deregister(self) -> None:
        await trio.lowlevel.checkpoint()
        self._deregistered = True
        self.network.reap(self.server_id, None)
