"""The broker interface: what a server needs from the thing that joins servers.

Implementations pass one contract suite (``tests/integration/test_broker_contract.py``):
``MemoryBroker`` (in-process, for one server or tests), ``RedisBroker`` (one
Redis) and ``ClusterBroker`` (Redis Cluster).

Channels are the hub's logical names: ``chat``, ``ping1``, ``ping2`` and
``room:<name>``; a broker maps them to its own wire names (the cluster's
sharded ``room:{name}``) and back, so the hub never sees the difference.

Two kinds of payload travel:
- *plain* (pings, ``JoinedRoom``, ``LeftRoom``): an encoded envelope, delivered
  as it is; not kept;
- *positioned* (``NewMessageReceived``, ``NewMessage``): the broker gives the
  message the next offset of its stream, keeps it in the stream's history and
  delivers ``"<offset> <epoch> <envelope>"`` (see ``core.positions.split``).
  The envelope is built once, in Python (``core.messages.Template``): the
  broker only fills in the position, so every copy (history, pub/sub, each
  recipient) is the same text.

Room joins and leaves are one broker operation each, writing presence and
announcing the change together, so an announcement and the member list it
implies cannot disagree and a crash cannot separate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from ..core.messages import Template
from ..core.positions import Position, StreamState


class Listener(Protocol):
    """What a broker calls back into: the hub of one server."""

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        """Hand over ``(channel, payload)`` pairs in arrival order; must not block."""

    def resubscribed(self, channels: Sequence[str]) -> None:
        """``channels`` were subscribed again after a break: anything published
        meanwhile was missed and must be filled from history."""

    def local_members(self) -> list[Member]:
        """Every member joined on this server, for re-registration."""

    @property
    def connection_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Member:
    """One connection in one room, as presence stores it.

    ``joined`` and ``left`` are the room's ``JoinedRoom``/``LeftRoom`` envelopes
    for this member, encoded by the server that owns it: a broker that
    announces on its behalf (reaping a dead server, re-registering after an
    outage) sends these texts and never encodes an envelope itself.
    ``record`` is the member's entry in ``MemberList.members`` (encoded JSON
    object), or ``""`` when authentication is off.
    """

    room: str
    user: str
    joined: str
    left: str
    record: str = ""


@dataclass(frozen=True, slots=True)
class Joined:
    """What a join returns: the room's members and its stream at the join."""

    users: list[str]
    records: list[str]  # per user, "" when authentication is off
    stream: StreamState


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    connected: bool
    ready: bool  # connected, every subscription confirmed, presence registered
    reason: str | None
    reconnects: int


class PubSub(Protocol):
    async def publish(self, channel: str, payload: str) -> None:
        """Deliver a plain ``payload`` to every server subscribed to ``channel``.

        Raises ``BrokerUnavailable`` when it could not be handed to the broker."""

    async def publish_message(self, channel: str, message: Template) -> Position:
        """Give ``message`` the next position of ``channel``'s stream, keep it, and
        deliver it positioned. Returns its position."""

    async def subscribe(self, channel: str) -> None:
        """Make this server receive ``channel``; returns once that is in effect.

        Idempotent. On ``BrokerUnavailable`` the wish is kept and fulfilled on
        reconnect unless ``unsubscribe`` withdraws it."""

    async def unsubscribe(self, channel: str) -> None: ...


class History(Protocol):
    async def stream(self, channel: str, *, with_log: bool) -> StreamState:
        """The stream's position (an epoch is created if it has none) and, with
        ``with_log``, every message it keeps, oldest first."""


class Presence(Protocol):
    async def join(self, member: Member, *, with_log: bool) -> Joined:
        """Record ``member`` on this server, publish ``member.joined`` to the room,
        and return the room's members and stream (with its log if asked), all
        read at the moment of the join."""

    async def leave(self, member: Member) -> bool:
        """Remove the member; ``member.left`` is published only if it was there
        (a reaper may have removed and announced it already)."""

    async def members(self, room: str) -> list[str]: ...

    async def rooms(self) -> dict[str, int]:
        """Member count per non-empty room, cluster-wide."""

    async def servers(self) -> dict[str, int]:
        """Connections per live server, cluster-wide (at most a second old)."""

    async def deregister(self) -> None:
        """Remove this server and its members (announcing ``LeftRoom``): clean exit."""


class Broker(PubSub, History, Presence, Protocol):
    name: str

    async def serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the broker's tasks until cancelled; ``started`` once the first attempt
        to connect is over (connected or not: a server starts without Redis)."""

    def status(self) -> BrokerStatus: ...
