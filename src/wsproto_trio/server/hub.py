"""The fan-out hub: one per server, the owner of every local connection's queue.

Rules:
- the hub never awaits a client: it queues with ``Connection.offer`` (``send_nowait``)
  and a full queue is that client's problem (closed 1013), nobody else's;
- a broker payload is queued to every recipient as the same ``str`` object;
- this server is subscribed to a room's channel while it has a local member in
  the room (the router says when), and always to ``ping1``, ``ping2``, ``chat``;
- leaving is a context manager (``connected``) so that no exit path of a
  connection can leave a room membership, subscription or presence entry behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from ..broker import Broker, BrokerStatus
from ..core import messages
from ..core.rooms import RoomTable
from ..errors import BrokerUnavailable, Unavailable
from ..metrics import Metrics, out_channel
from .connection import Connection

log = logging.getLogger("wsproto_trio.hub")

GLOBAL_CHANNELS = ("ping1", "ping2", messages.CHAT_CHANNEL)
CLEANUP_DEADLINE = 5.0
_PINGS = {channel: messages.ping(number) for channel, number in messages.PING_CHANNELS.items()}


class Hub:
    def __init__(self, server_id: str, broker: Broker) -> None:
        self.server_id = server_id
        self.broker = broker
        self.connections: dict[str, Connection] = {}
        self.rooms: RoomTable[Connection] = RoomTable()
        self.metrics = Metrics(self._live_metrics)
        self.draining = False
        self.started = time.monotonic()
        self._no_connections = trio.Event()
        self._no_connections.set()

    # -- what the broker calls ---------------------------------------------------

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        begin = time.perf_counter()
        everyone: list[Connection] | None = None  # built once per batch, not per message
        sent: dict[str, int] = {}
        for channel, payload in batch:
            if channel.startswith(messages.ROOM_PREFIX):
                targets: Sequence[Connection] = self.rooms.route(
                    channel[len(messages.ROOM_PREFIX) :], payload
                )
            elif channel == messages.CHAT_CHANNEL:
                if everyone is None:
                    everyone = list(self.connections.values())
                targets = everyone
            elif (ping := _PINGS.get(channel)) is not None:
                log.info("ping received from broker on %s", channel)
                payload = ping
                if everyone is None:
                    everyone = list(self.connections.values())
                targets = everyone
            else:
                continue
            for connection in targets:
                connection.offer(payload)
            if targets:
                label = out_channel(channel)
                sent[label] = sent.get(label, 0) + len(targets)
        for label, count in sent.items():
            self.metrics.messages_out.labels(label).inc(count)
        self.metrics.fanout_seconds.observe(time.perf_counter() - begin)

    def local_members(self) -> list[tuple[str, str]]:
        return [
            (room, connection.user_id)
            for room in self.rooms.rooms()
            for connection in self.rooms.members(room)
        ]

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    # -- lifecycle ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker and hold the global subscriptions until cancelled."""
        log.info("server %s using the %s broker", self.server_id, self.broker.name)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.broker.serve, self)
            for channel in GLOBAL_CHANNELS:
                try:
                    await self.broker.subscribe(channel)
                except BrokerUnavailable as exc:
                    log.warning(
                        "subscribing %s deferred until the broker is back: %s", channel, exc
                    )
            task_status.started()

    def status(self) -> BrokerStatus:
        return self.broker.status()

    def drain(self, code: int = 1001) -> None:
        """Refuse new connections and close every open one with ``code``."""
        self.draining = True
        for connection in list(self.connections.values()):
            connection.close(code)

    async def wait_no_connections(self) -> None:
        await self._no_connections.wait()

    async def deregister(self) -> None:
        """Remove this server and its members from presence (others see LeftRoom)."""
        with trio.move_on_after(CLEANUP_DEADLINE):
            try:
                await self.broker.deregister()
            except BrokerUnavailable as exc:
                log.warning("could not deregister from the broker: %s", exc)

    def _live_metrics(self) -> dict[str, float]:
        status = self.broker.status()
        return {
            "wsproto_connections": len(self.connections),
            "wsproto_rooms": len(self.rooms.rooms()),
            "wsproto_room_members": self.rooms.member_count,
            "wsproto_broker_up": 1.0 if status.connected else 0.0,
            "wsproto_broker_reconnects_total": status.reconnects,
        }

    # -- what a connection calls -------------------------------------------------

    @asynccontextmanager
    async def connected(self, connection: Connection) -> AsyncIterator[None]:
        self.connections[connection.user_id] = connection
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        shown = list(self.connections)[:20]
        more = f" (+{len(self.connections) - 20} more)" if len(self.connections) > 20 else ""
        log.info(
            "client connected: %s; %d connected: %s%s",
            connection.user_id, len(self.connections), shown, more,
        )  # fmt: skip
        try:
            yield
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLEANUP_DEADLINE
                for room in sorted(connection.session.rooms):
                    await self._leave(connection, room, acknowledge=False)
            del self.connections[connection.user_id]
            if not self.connections:
                self._no_connections.set()
            log.info("client disconnected: %s; %d connected", connection.user_id,
                     len(self.connections))  # fmt: skip

    async def publish(self, channel: str, payload: str) -> None:
        begin = time.perf_counter()
        try:
            await self.broker.publish(channel, payload)
        except BrokerUnavailable as exc:
            raise Unavailable(f"message not delivered: {exc}") from None
        self.metrics.publish_seconds.observe(time.perf_counter() - begin)

    async def join(self, connection: Connection, room: str) -> None:
        channel = messages.room_channel(room)
        self.rooms.add(room, connection)
        try:
            await self.broker.subscribe(channel)
            users = await self.broker.join(
                room, connection.user_id, messages.joined_room(room, connection.user_id)
            )
        except BrokerUnavailable as exc:
            connection.session.forget(room)
            if self.rooms.remove(room, connection):
                await self._unsubscribe(channel)
            raise Unavailable(f"could not join {room!r}: {exc}") from None
        except BaseException:
            if self.rooms.remove(room, connection):
                with trio.CancelScope(shield=True):
                    await self._unsubscribe(channel)
            raise
        connection.offer(messages.member_list(room, users))
        for payload in self.rooms.activate(room, connection):
            connection.offer(payload)

    async def leave(self, connection: Connection, room: str) -> None:
        await self._leave(connection, room, acknowledge=True)

    async def _leave(self, connection: Connection, room: str, *, acknowledge: bool) -> None:
        user = connection.user_id
        announce = messages.left_room(room, user)
        last = self.rooms.remove(room, connection)
        connection.session.forget(room)
        if acknowledge:
            connection.offer(announce)
        try:
            await self.broker.leave(room, user, announce)
        except BrokerUnavailable as exc:
            # Presence is made right when the broker resynchronises after it
            # comes back; the local leave has happened either way.
            log.warning("leave of %s from %r not recorded by the broker: %s", user, room, exc)
        finally:
            if last:
                await self._unsubscribe(messages.room_channel(room))

    async def _unsubscribe(self, channel: str) -> None:
        try:
            await self.broker.unsubscribe(channel)
        except BrokerUnavailable as exc:
            log.warning("unsubscribe from %s failed: %s", channel, exc)
