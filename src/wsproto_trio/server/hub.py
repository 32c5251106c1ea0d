"""The fan-out hub: one per server, the owner of every local connection's queue.

Rules:
- the hub never awaits a client: it queues with ``Recipient.offer``
  (``send_nowait``) and a full queue is that client's problem (closed 1013),
  nobody else's;
- a broker payload is queued to every recipient as the same ``str`` object;
- this server is subscribed to a room's channel while it has a local member in
  the room (the room table says when), and always to ``ping1``, ``ping2``, ``chat``;
- every positioned stream it receives goes through its ``Tracker``
  (``core.positions``): duplicates are dropped, and a gap, or a break in the
  subscription, is filled from the stream's history by the fill task before
  anything newer is delivered; what history no longer holds becomes ``Lost``;
- a joiner (and a client recovering the chat) gets its position, then its
  replay, then live traffic past that position, never a message twice;
- leaving is a context manager (``connected``) so that no exit path of a
  connection can leave a room membership, subscription or presence entry behind.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from ..broker import Broker, BrokerStatus, Member
from ..core import messages, positions
from ..core.backoff import Backoff
from ..core.messages import Template
from ..core.positions import Entry, Lost, Output, Position, Tracker
from ..core.rooms import RoomTable, past
from ..errors import BrokerUnavailable, Unavailable
from ..metrics import Metrics, out_channel

log = logging.getLogger("wsproto_trio.hub")

GLOBAL_CHANNELS = ("ping1", "ping2", messages.CHAT_CHANNEL)
CLEANUP_DEADLINE = 5.0
_PINGS = {channel: messages.ping(number) for channel, number in messages.PING_CHANNELS.items()}


class Recipient(Hashable, Protocol):
    """What the hub needs of a connection."""

    @property
    def id(self) -> str: ...

    @property
    def rooms(self) -> set[str]:
        """The rooms it is in (owned by its session)."""

    def offer(self, payload: str) -> None:
        """Queue without blocking."""

    def member(self, room: str) -> Member:
        """Its presence entry for ``room``, with its JoinedRoom/LeftRoom texts."""

    def forget(self, room: str) -> None:
        """Undo a join that did not happen."""

    def close(self, code: int) -> None: ...


class Hub:
    def __init__(self, server_id: str, broker: Broker) -> None:
        self.server_id = server_id
        self.broker = broker
        self.connections: dict[str, Recipient] = {}
        self.rooms: RoomTable[Recipient] = RoomTable()
        self.metrics = Metrics(self._live_metrics)
        self.draining = False
        self.started = time.monotonic()
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._trackers: dict[str, Tracker] = {messages.CHAT_CHANNEL: Tracker()}
        # Chat recovery: what arrives while a client's replay is read, and the
        # position below which it gets no chat message afterwards.
        self._recovering: dict[Recipient, list[Entry]] = {}
        self._chat_floors: dict[Recipient, Position] = {}
        self._to_fill: set[str] = set()
        self._fill_wanted = trio.Event()
        # Per delivery batch: the chat's recipients and the counts for metrics,
        # so that both cost once per batch, not once per message.
        self._everyone: list[Recipient] | None = None
        self._sent: dict[str, int] | None = None

    # -- what the broker calls ---------------------------------------------------

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        begin = time.perf_counter()
        self._begin_batch()
        for channel, payload in batch:
            ping = _PINGS.get(channel)
            if ping is not None:
                log.info("ping received from broker on %s", channel)
                self._fan_out_plain(channel, ping)
                continue
            entry = positions.split(payload)
            if not entry.offset:
                self._emit(channel, entry)
                continue
            tracker = self._trackers.get(channel)
            if tracker is None:
                continue  # a room this server no longer has members in
            out, fill = tracker.accept(entry)
            for item in out:
                self._emit(channel, item)
            if fill:
                self._want_fill(channel)
        self._end_batch()
        self.metrics.fanout_seconds.observe(time.perf_counter() - begin)

    def _begin_batch(self) -> None:
        self._everyone = None
        self._sent = {}

    def _end_batch(self) -> None:
        sent, self._sent = self._sent, None
        self._everyone = None
        for label, count in (sent or {}).items():
            self.metrics.messages_out.labels(label).inc(count)

    def resubscribed(self, channels: Sequence[str]) -> None:
        for channel in channels:
            tracker = self._trackers.get(channel)
            if tracker is None:
                continue
            if not tracker.known or tracker.refill():
                self._want_fill(channel)  # a fill, or a baseline read when nothing is known

    def local_members(self) -> list[Member]:
        return [
            connection.member(room)
            for room in self.rooms.rooms()
            for connection in self.rooms.members(room)
        ]

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    # -- fan-out -----------------------------------------------------------------

    def _emit(self, channel: str, item: Output) -> None:
        if isinstance(item, Lost):
            self.metrics.lost_notices.inc()
            room = messages.room_name(channel)
            item = positions.plain(messages.lost(room, item.epoch, item.offset))
            log.warning("stream %s: messages up to %d may be missing", channel, item.offset)
        if channel == messages.CHAT_CHANNEL:
            self._fan_out_chat(item)
            return
        room = messages.room_name(channel)
        if room is None:
            return
        targets = self.rooms.route(room, item)
        for connection in targets:
            connection.offer(item.text)
        self._count("chat-room", len(targets))

    def _fan_out_chat(self, entry: Entry) -> None:
        for buffer in self._recovering.values():
            buffer.append(entry)
        targets = self._everyone_now()
        floors = self._chat_floors
        if floors:
            targets = [c for c in targets if self._past_chat_floor(c, entry)]
        text = entry.text
        for connection in targets:
            connection.offer(text)
        self._count("chat", len(targets))

    def _past_chat_floor(self, connection: Recipient, entry: Entry) -> bool:
        floor = self._chat_floors.get(connection)
        if floor is None:
            return True
        if not past(entry, floor):
            return False
        if entry.offset:
            del self._chat_floors[connection]
        return True

    def _fan_out_plain(self, channel: str, text: str) -> None:
        targets = list(self.connections.values())
        for connection in targets:
            connection.offer(text)
        self._count(out_channel(channel), len(targets))

    def _everyone_now(self) -> list[Recipient]:
        everyone = self._everyone
        if everyone is None:
            recovering = self._recovering
            everyone = [c for c in self.connections.values() if c not in recovering]
            self._everyone = everyone
        return everyone

    def _count(self, label: str, n: int) -> None:
        if n:
            sent = self._sent
            if sent is None:
                self.metrics.messages_out.labels(label).inc(n)
            else:
                sent[label] = sent.get(label, 0) + n

    # -- gap filling -------------------------------------------------------------

    def _want_fill(self, channel: str) -> None:
        self._to_fill.add(channel)
        self._fill_wanted.set()

    async def _serve_fills(self) -> None:
        """Fill every stream that has a gap from its history, one read per stream."""
        backoff = Backoff()
        while True:
            await self._fill_wanted.wait()
            self._fill_wanted = trio.Event()
            failed = False
            for channel in sorted(self._to_fill):
                self._to_fill.discard(channel)
                tracker = self._trackers.get(channel)
                if tracker is None or (tracker.known and not tracker.filling):
                    continue
                try:
                    state = await self.broker.stream(channel, with_log=tracker.known)
                except BrokerUnavailable as exc:
                    log.warning("filling a gap in %s deferred: %s", channel, exc)
                    self._to_fill.add(channel)
                    failed = True
                    continue
                self.metrics.history_reads.inc()
                if self._trackers.get(channel) is not tracker:
                    continue  # unsubscribed meanwhile
                if not tracker.known:
                    tracker.observe(state.position)  # the baseline: nothing was missed yet
                    continue
                self._begin_batch()
                for item in tracker.filled(state):
                    self._emit(channel, item)
                self._end_batch()
                self.metrics.gaps_filled.inc()
                if tracker.filling:
                    self._to_fill.add(channel)
            if self._to_fill:
                if failed:
                    await trio.sleep(backoff.next_delay())
                else:
                    backoff.reset()
                self._fill_wanted.set()
            else:
                backoff.reset()

    # -- lifecycle ---------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker and hold the global subscriptions until cancelled."""
        log.info("server %s using the %s broker", self.server_id, self.broker.name)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.broker.serve, self)
            nursery.start_soon(self._serve_fills)
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
    async def connected(
        self, connection: Recipient, *, recovering_chat: bool = False
    ) -> AsyncIterator[None]:
        """Register ``connection``; with ``recovering_chat`` its chat is held back
        until ``recover_chat`` has sent its position and replay."""
        self.connections[connection.id] = connection
        if recovering_chat:
            self._recovering[connection] = []
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        shown = list(self.connections)[:20]
        more = f" (+{len(self.connections) - 20} more)" if len(self.connections) > 20 else ""
        log.info(
            "client connected: %s; %d connected: %s%s",
            connection.id, len(self.connections), shown, more,
        )  # fmt: skip
        try:
            yield
        finally:
            self._recovering.pop(connection, None)
            self._chat_floors.pop(connection, None)
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLEANUP_DEADLINE
                for room in sorted(connection.rooms):
                    await self._leave(connection, room, acknowledge=False)
            del self.connections[connection.id]
            if not self.connections:
                self._no_connections.set()
            log.info("client disconnected: %s; %d connected", connection.id,
                     len(self.connections))  # fmt: skip

    async def recover_chat(
        self, connection: Recipient, since: Position | None, history: int | None
    ) -> None:
        """Send the chat's ``Position``, the replay, then release live chat past it."""
        try:
            state = await self.broker.stream(
                messages.CHAT_CHANNEL, with_log=since is not None or bool(history)
            )
        except BrokerUnavailable as exc:
            self._recovering.pop(connection, None)
            raise Unavailable(f"chat position not available: {exc}") from None
        self.metrics.history_reads.inc()
        self._trackers[messages.CHAT_CHANNEL].observe(state.position)
        replay, recovered = positions.replay(state, since, history)
        self._count_recovery("chat", recovered, history)
        connection.offer(messages.chat_position(state.position, recovered))
        for entry in replay:
            connection.offer(entry.text)
        floor = state.position
        for entry in self._recovering.pop(connection, []):
            if past(entry, floor):
                connection.offer(entry.text)
        self._chat_floors[connection] = floor

    def _count_recovery(self, stream: str, recovered: bool | None, history: int | None) -> None:
        if recovered is not None:
            outcome = "recovered" if recovered else "not_recovered"
            self.metrics.recoveries.labels(stream, outcome).inc()
        elif history:
            self.metrics.recoveries.labels(stream, "history").inc()

    async def publish(self, channel: str, payload: str) -> None:
        """A plain publication (pings)."""
        begin = time.perf_counter()
        try:
            await self.broker.publish(channel, payload)
        except BrokerUnavailable as exc:
            raise Unavailable(f"message not delivered: {exc}") from None
        self.metrics.publish_seconds.observe(time.perf_counter() - begin)

    async def publish_message(self, channel: str, message: Template) -> Position:
        """A positioned publication (chat and room messages)."""
        begin = time.perf_counter()
        try:
            position = await self.broker.publish_message(channel, message)
        except BrokerUnavailable as exc:
            raise Unavailable(f"message not delivered: {exc}") from None
        self.metrics.publish_seconds.observe(time.perf_counter() - begin)
        return position

    async def join(
        self,
        connection: Recipient,
        room: str,
        since: Position | None = None,
        history: int | None = None,
    ) -> None:
        channel = messages.room_channel(room)
        member = connection.member(room)
        if self.rooms.add(room, connection):
            self._trackers[channel] = Tracker()
        try:
            await self.broker.subscribe(channel)
            joined = await self.broker.join(member, with_log=since is not None or bool(history))
        except BrokerUnavailable as exc:
            connection.forget(room)
            if self.rooms.remove(room, connection):
                await self._unsubscribe(channel)
            raise Unavailable(f"could not join {room!r}: {exc}") from None
        except BaseException:
            if self.rooms.remove(room, connection):
                with trio.CancelScope(shield=True):
                    await self._unsubscribe(channel)
            raise
        state = joined.stream
        tracker = self._trackers.get(channel)
        if tracker is not None:
            tracker.observe(state.position)
        replay, recovered = positions.replay(state, since, history)
        self._count_recovery("room", recovered, history)
        records = None
        if member.record:
            # A member registered by a server without authentication has no
            # record (a cluster being switched over): list it by its id alone.
            records = [
                json.loads(r) if r else {"user": u}
                for u, r in zip(joined.users, joined.records, strict=True)
            ]
        connection.offer(
            messages.member_list(
                room, joined.users, state.position, recovered=recovered, members=records
            )
        )
        for entry in replay:
            connection.offer(entry.text)
        for entry in self.rooms.activate(room, connection, state.position):
            connection.offer(entry.text)

    async def leave(self, connection: Recipient, room: str) -> None:
        await self._leave(connection, room, acknowledge=True)

    async def _leave(self, connection: Recipient, room: str, *, acknowledge: bool) -> None:
        member = connection.member(room)
        last = self.rooms.remove(room, connection)
        if acknowledge:
            connection.offer(member.left)
        try:
            await self.broker.leave(member)
        except BrokerUnavailable as exc:
            # Presence is made right when the broker resynchronises after it
            # comes back; the local leave has happened either way.
            log.warning("leave of %s from %r not recorded by the broker: %s", member.user, room,
                        exc)  # fmt: skip
        finally:
            if last:
                await self._unsubscribe(messages.room_channel(room))

    async def _unsubscribe(self, channel: str) -> None:
        room = messages.room_name(channel)
        if room is not None and room not in self.rooms:
            self._trackers.pop(channel, None)
            self._to_fill.discard(channel)
        try:
            await self.broker.unsubscribe(channel)
        except BrokerUnavailable as exc:
            log.warning("unsubscribe from %s failed: %s", channel, exc)
