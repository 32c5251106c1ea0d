"""The broker interface: what a server needs from the thing that joins servers.

Two implementations pass one contract suite (``tests/integration/test_broker_contract.py``):
``MemoryBroker`` (in-process, for one server or tests) and ``RedisBroker``.

Payloads are encoded envelopes (``str``): a server encodes a message once and
every server forwards the same text to its clients. Room joins and leaves are
one broker operation each, writing presence and announcing the change together,
so an announcement and the member list it implies cannot disagree and a crash
cannot separate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio


class Server(Protocol):
    """What a broker calls back into: the hub of one server."""

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        """Hand over ``(channel, payload)`` pairs in arrival order; must not block."""

    def local_members(self) -> list[tuple[str, str]]:
        """Every ``(room, user)`` joined on this server, for re-registration."""

    @property
    def connection_count(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    connected: bool
    ready: bool  # connected, every subscription confirmed, presence registered
    reason: str | None
    reconnects: int


class Broker(Protocol):
    name: str

    async def serve(
        self, server: Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the broker's tasks until cancelled; ``started`` once the first attempt
        to connect is over (connected or not: a server starts without Redis)."""

    def status(self) -> BrokerStatus: ...

    async def publish(self, channel: str, payload: str) -> None:
        """Deliver ``payload`` to every server subscribed to ``channel``.

        Raises ``BrokerUnavailable`` when it could not be handed to the broker."""

    async def subscribe(self, channel: str) -> None:
        """Make this server receive ``channel``; returns once that is in effect.

        Idempotent. On ``BrokerUnavailable`` the wish is kept and fulfilled on
        reconnect unless ``unsubscribe`` withdraws it."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def join(self, room: str, user: str, announce: str) -> list[str]:
        """Record ``user`` in ``room`` on this server, publish ``announce`` to the
        room's channel, and return the room's members across the cluster."""

    async def leave(self, room: str, user: str, announce: str) -> bool:
        """Remove ``user`` from ``room``; ``announce`` is published only if it was
        there (a reaper may have removed and announced it already)."""

    async def members(self, room: str) -> list[str]: ...

    async def rooms(self) -> dict[str, int]:
        """Member count per non-empty room, cluster-wide."""

    async def servers(self) -> dict[str, int]:
        """Connections per live server, cluster-wide."""

    async def deregister(self) -> None:
        """Remove this server and its members (announcing ``LeftRoom``): clean exit."""
