"""The in-process broker: one process, no Redis.

A ``MemoryNetwork`` stands for one Redis: every ``MemoryBroker`` made from the
same network is a server of one cluster, which is how the contract tests run
several servers without Redis. A server started without ``REDIS_URL`` gets a
network of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from ..core import messages
from ..core.presence import PresenceTable
from . import BrokerStatus, Server


class MemoryNetwork:
    def __init__(self) -> None:
        self.presence = PresenceTable()
        self.subscribers: dict[str, set[MemoryBroker]] = {}
        self.brokers: set[MemoryBroker] = set()

    def publish(self, channel: str, payload: str) -> int:
        receivers = list(self.subscribers.get(channel, ()))
        for broker in receivers:
            broker.receive(channel, payload)
        return len(receivers)

    def numsub(self, channel: str) -> int:
        return len(self.subscribers.get(channel, ()))


class MemoryBroker:
    name = "memory"

    def __init__(self, server_id: str, network: MemoryNetwork | None = None) -> None:
        self.server_id = server_id
        self.network = network if network is not None else MemoryNetwork()
        self._server: Server | None = None
        self._deregistered = False

    async def serve(
        self, server: Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._server = server
        self.network.brokers.add(self)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._server = None
            self.network.brokers.discard(self)
            for subscribers in self.network.subscribers.values():
                subscribers.discard(self)

    def status(self) -> BrokerStatus:
        up = self._server is not None
        return BrokerStatus(
            connected=up, ready=up, reason=None if up else "not started", reconnects=0
        )

    def receive(self, channel: str, payload: str) -> None:
        if self._server is not None:
            self._server.deliver(((channel, payload),))

    async def publish(self, channel: str, payload: str) -> None:
        await trio.lowlevel.checkpoint()
        self.network.publish(channel, payload)

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

    async def join(self, room: str, user: str, announce: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        users = self.network.presence.join(room, user, self.server_id)
        self.network.publish(messages.room_channel(room), announce)
        return users

    async def leave(self, room: str, user: str, announce: str) -> bool:
        await trio.lowlevel.checkpoint()
        removed = self.network.presence.leave(room, user)
        if removed:
            self.network.publish(messages.room_channel(room), announce)
        return removed

    async def members(self, room: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return self.network.presence.members(room)

    async def rooms(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return self.network.presence.room_counts()

    async def servers(self) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return {
            broker.server_id: broker._server.connection_count
            for broker in self.network.brokers
            if broker._server is not None and not broker._deregistered
        }

    async def deregister(self) -> None:
        await trio.lowlevel.checkpoint()
        self._deregistered = True
        announce(self.network, self.network.presence.reap(self.server_id))


def announce(network: MemoryNetwork, removed: Sequence[tuple[str, str]]) -> None:
    for room, user in removed:
        network.publish(messages.room_channel(room), messages.left_room(room, user))
