"""The cluster's pub/sub bridge: sharded rooms on their masters, the rest on one node.

Rules:
- a room channel ``room:<R>`` is the sharded channel ``room:{R}`` (same slot as
  the room's keys), ``SSUBSCRIBE``d on the master that owns its slot; every
  other channel (``chat``, ``ping1``, ``ping2``) is a classic channel, which a
  cluster delivers to every node: it is ``SUBSCRIBE``d on one node, chosen from
  the server id so servers spread over the nodes, and moved when that node goes;
- one link (pub/sub connection) per master, plus the classic one: a server's
  connections are bounded by the masters, never by its rooms;
- a subscription is placed on its link, confirmed by the node's reply, and lost
  when the link breaks, when the node pushes ``sunsubscribe`` (its slot moved or
  was lost) or when the topology says the slot has another owner. A lost
  subscription is placed again on the slot's owner; once that is confirmed, the
  listener hears ``resubscribed([channel])`` and fills the gap from history;
- the topology (``CLUSTER SHARDS``) is read at start, on every hint that it
  changed (MOVED, a pushed ``sunsubscribe``, a broken link), every quarter
  second while something is wrong and every few seconds otherwise.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
import redis.exceptions
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...core.backoff import Backoff
from ...core.messages import ROOM_PREFIX
from .link import BROKEN, Dropped, Link, Message, Refused, Subscribed
from .topology import Address, Topology, address_text, slot_of

log = logging.getLogger("wsproto_trio.broker.cluster")

SUBSCRIBE_TIMEOUT = 5.0
TROUBLED_REFRESH = 0.25
CALM_REFRESH = 5.0
COALESCE = 0.02  # a rebalance moves slot after slot: one read covers a burst of hints


class Sink(Protocol):
    def deliver(self, batch: Sequence[tuple[str, str]]) -> None: ...

    def resubscribed(self, channels: Sequence[str]) -> None: ...


def room_tag(room: str) -> str:
    """What goes between the braces of a room's keys and channel.

    Redis hashes the text between the first ``{`` and the next ``}``; a room
    whose name starts with ``}`` would make that empty, so that the whole key
    is hashed and the room's keys and channel land in different slots. Such a
    name gets a control character in front, which no room name can contain
    (so the mapping stays one-to-one)."""
    return "\x01" + room if room.startswith("}") else room


def wire_name(channel: str) -> tuple[str, bool]:
    """The hub's channel name -> (the cluster's channel name, sharded?)."""
    if channel.startswith(ROOM_PREFIX):
        return f"{ROOM_PREFIX}{{{room_tag(channel[len(ROOM_PREFIX) :])}}}", True
    return channel, False


@dataclass(eq=False, slots=True)
class _Sub:
    channel: str
    wire: str
    sharded: bool
    slot: int
    link: _LinkState | None = None  # where its SUBSCRIBE was sent
    confirmed: bool = False
    broken: bool = False  # was in effect, then lost: the gap must be filled
    event: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class ShardStats:
    """Per link: ``address`` is the node, ``role`` "master" or "classic"."""

    address: str
    role: str
    connected: bool
    subscriptions: int
    resubscriptions: int
    reconnects: int


@dataclass(eq=False, slots=True)
class _LinkState:
    role: str  # "master" or "classic"
    address: Address | None = None
    link: Link | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    attempted: trio.Event = field(default_factory=trio.Event)
    subs: set[_Sub] = field(default_factory=set)
    resubscriptions: int = 0
    reconnects: int = 0
    ever_connected: bool = False
    failing: bool = False  # the last attempt failed: log the next failures quietly

    @property
    def connected(self) -> bool:
        return self.link is not None


class ShardedPubSub:
    """Subscriptions of one server on a Redis Cluster (see the module rules)."""

    def __init__(
        self,
        seeds: Sequence[Address],
        server_id: str,
        *,
        timeout: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_change(masters_changed)`` is called when a link connects or breaks
        and when the topology changes (``True`` when the set of masters did)."""
        if not seeds:
            raise ValueError("a cluster needs at least one seed node")
        self.seeds = tuple(seeds)
        self.server_id = server_id
        self.timeout = timeout
        self.topology: Topology | None = None
        self.topology_reads = 0
        self._on_change = on_change
        self._sink: Sink | None = None
        self._nursery: trio.Nursery | None = None
        self._masters: dict[Address, _LinkState] = {}
        self._classic = _LinkState("classic")
        self._classic_skip = 0
        self._subs: dict[str, _Sub] = {}  # by hub channel
        self._by_wire: dict[str, _Sub] = {}
        self._unplaced: set[_Sub] = set()
        self._refresh = trio.Event()
        self._reason: str | None = "connecting"
        self._masters_seen: list[Address] = []
        self.promoted: set[Address] = set()  # masters new in the latest topology change

    # -- status -----------------------------------------------------------------

    @property
    def reason(self) -> str | None:
        """Why a shard this server needs is unreachable, or ``None``."""
        if self.topology is None:
            return self._reason or "cluster topology unknown"
        if not self._classic.connected:
            return "no node reachable for the chat and pings"
        needed = {slot_of("{chat}")}
        needed.update(sub.slot for sub in self._subs.values() if sub.sharded)
        for slot in needed:
            owner = self.topology.owner(slot)
            if owner is None:
                return f"slot {slot} has no master (failover in progress?)"
            state = self._masters.get(owner)
            if state is None or not state.connected:
                return f"master {address_text(owner)} unreachable"
        return None

    @property
    def ready(self) -> bool:
        """Reachable, and every classic subscription confirmed (rooms come and
        go with members and do not count)."""
        return self.reason is None and all(
            sub.confirmed for sub in self._subs.values() if not sub.sharded
        )

    def stats(self) -> list[ShardStats]:
        states = [*self._masters.values(), self._classic]
        return [
            ShardStats(
                address=address_text(state.address) if state.address else "-",
                role=state.role,
                connected=state.connected,
                subscriptions=len(state.subs),
                resubscriptions=state.resubscriptions,
                reconnects=state.reconnects,
            )
            for state in states
        ]

    @property
    def connections(self) -> int:
        return sum(1 for state in (*self._masters.values(), self._classic) if state.connected)

    # -- tasks ------------------------------------------------------------------

    async def serve(
        self, sink: Sink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the topology reader and the links; ``started`` once the first
        attempt to reach the cluster and each link is over (reached or not)."""
        self._sink = sink
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._serve_link, self._classic)
                await nursery.start(self._serve_topology)
                with trio.move_on_after(self.timeout):
                    for state in [*self._masters.values(), self._classic]:
                        await state.attempted.wait()
                task_status.started()
        finally:
            self._nursery = None
            self._sink = None

    async def _serve_topology(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        while True:
            self._refresh = trio.Event()
            try:
                topology = await trio.to_thread.run_sync(
                    self._read_topology, self._candidates(), abandon_on_cancel=True
                )
            except (OSError, redis.exceptions.RedisError) as exc:
                if self._reason is None or self._reason == "connecting":
                    log.warning("cluster topology unreadable (%s); retrying", exc)
                self._reason = f"cluster unreachable: {exc}"
            else:
                self._reason = None
                self._apply(topology)
            if not started:
                task_status.started()
                started = True
            with trio.move_on_after(TROUBLED_REFRESH if self._troubled() else CALM_REFRESH):
                await self._refresh.wait()
            await trio.sleep(COALESCE)

    def _candidates(self) -> list[Address]:
        known = self.topology.nodes if self.topology is not None else []
        masters = self.topology.masters if self.topology is not None else []
        ordered = [*masters, *known, *self.seeds]
        return list(dict.fromkeys(ordered))

    def _read_topology(self, candidates: list[Address]) -> Topology:
        failure: Exception | None = None
        for host, port in candidates:
            client = redis.Redis(
                host=host, port=port, decode_responses=True, protocol=2,
                socket_timeout=self.timeout, socket_connect_timeout=min(self.timeout, 0.5),
                retry=Retry(NoBackoff(), 0), health_check_interval=0,
            )  # fmt: skip
            try:
                reply = client.execute_command("CLUSTER", "SHARDS")  # type: ignore[no-untyped-call]  # untyped in redis-py
            except (OSError, redis.exceptions.RedisError) as exc:
                failure = exc
                continue
            finally:
                client.close()
            topology = Topology.parse(reply)
            if topology.masters:
                return topology
        raise redis.exceptions.ConnectionError(f"no cluster node answered: {failure}")

    def _troubled(self) -> bool:
        if self.topology is None or not self.topology.complete or self._unplaced:
            return True
        if not self._classic.connected:
            return True
        return any(not state.connected for state in self._masters.values())

    def _apply(self, topology: Topology) -> None:
        changed = self.topology is None or self.topology.shards != topology.shards
        self.topology = topology
        self.topology_reads += 1
        if not changed:
            self._place()
            return
        masters = set(topology.masters)
        for address, state in list(self._masters.items()):
            if address not in masters:
                del self._masters[address]
                state.scope.cancel()  # its subscriptions become unplaced as it stops
        if self._nursery is not None:
            for address in masters.difference(self._masters):
                state = _LinkState("master", address)
                self._masters[address] = state
                self._nursery.start_soon(self._serve_link, state)
        for sub in list(self._by_wire.values()):
            if (
                sub.sharded
                and sub.link is not None
                and sub.link.address != topology.owner(sub.slot)
            ):
                self._withdraw(sub)
                self._lose(sub)
        classic = self._classic
        if classic.address is not None and classic.address not in topology.nodes:
            classic.scope.cancel()
        self._place()
        self.promoted = masters.difference(self._masters_seen)
        self._changed(masters != set(self._masters_seen))
        self._masters_seen = sorted(masters)

    def _changed(self, masters_changed: bool) -> None:
        if self._on_change is not None:
            self._on_change(masters_changed)

    def _wake_refresh(self) -> None:
        self._refresh.set()

    async def _serve_link(self, state: _LinkState) -> None:
        backoff = Backoff(base=0.05, cap=2.0)
        while True:
            with state.scope:
                await self._run_link(state, backoff)
            if state.role == "master" and self._masters.get(state.address or ("", 0)) is not state:
                return  # no longer a master: its subscriptions were placed elsewhere
            state.scope = trio.CancelScope()
            await trio.sleep(backoff.next_delay())

    async def _run_link(self, state: _LinkState, backoff: Backoff) -> None:
        if state.role == "classic":
            state.address = self._classic_address()
            if state.address is None:
                state.attempted.set()
                return
        assert state.address is not None
        link: Link | None = None
        try:
            link = await Link.open(state.address, socket_timeout=self.timeout)
            state.link = link
            state.failing = False
            if state.ever_connected:
                state.reconnects += 1
                log.info("pub/sub link to %s back", address_text(state.address))
            state.ever_connected = True
            backoff.reset()
            state.attempted.set()
            self._place()
            self._changed(False)
            await self._pump(state, link)
        except BROKEN as exc:
            quiet = state.link is None and state.failing
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "pub/sub link to %s broken: %s", address_text(state.address), exc)
            state.failing = True
            if state.role == "classic":
                self._classic_skip += 1
        finally:
            state.attempted.set()
            state.link = None
            if link is not None:
                link.close()
            for sub in list(state.subs):
                self._lose(sub)
            self._wake_refresh()
            self._changed(False)

    async def _pump(self, state: _LinkState, link: Link) -> None:
        """Read and write ``link`` until it breaks; raises the first failure."""
        failures: list[Exception] = []
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                try:
                    await link.serve_writes()
                except BROKEN as exc:
                    failures.append(exc)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(write)
            try:
                while True:
                    self._handle(state, await link.receive())
            except BROKEN as exc:
                failures.append(exc)
                nursery.cancel_scope.cancel()
        if failures:
            raise failures[0]

    def _classic_address(self) -> Address | None:
        nodes = self.topology.nodes if self.topology is not None else list(self.seeds)
        if not nodes:
            return None
        start = zlib.crc32(self.server_id.encode())
        return nodes[(start + self._classic_skip) % len(nodes)]

    # -- events -----------------------------------------------------------------

    def _handle(self, state: _LinkState, events: list[Any]) -> None:
        batch: list[tuple[str, str]] = []
        back: list[str] = []
        for event in events:
            match event:
                case Message(wire, data):
                    sub = self._by_wire.get(wire)
                    if sub is not None and sub.link is state:
                        batch.append((sub.channel, data))
                case Subscribed(wire, settled):
                    sub = self._by_wire.get(wire)
                    if sub is None or sub.link is not state or not settled or sub.confirmed:
                        continue
                    sub.confirmed = True
                    sub.event.set()
                    if sub.broken:
                        sub.broken = False
                        state.resubscriptions += 1
                        back.append(sub.channel)
                case Dropped(wire):
                    sub = self._by_wire.get(wire)
                    if sub is not None and sub.link is state:
                        log.info("%s dropped by its node (slot moved)", wire)
                        self._lose(sub)
                        self._wake_refresh()
                case Refused(wire, error):
                    sub = self._by_wire.get(wire)
                    if isinstance(error, redis.exceptions.AskError) and self.topology is not None:
                        # MOVED (AskError's subclass) or ASK: the slot is moving or moved.
                        self.topology.moved(error.slot_id, (error.host, int(error.port)))
                    if sub is not None and sub.link is state:
                        self._lose(sub)
                    self._wake_refresh()
        if batch and self._sink is not None:
            self._sink.deliver(batch)
        if back and self._sink is not None:
            self._sink.resubscribed(back)
        if self._unplaced:
            self._place()

    def _lose(self, sub: _Sub) -> None:
        """``sub`` is no longer in effect where it was; place it again."""
        if sub.link is not None:
            sub.link.subs.discard(sub)
            sub.link = None
        if sub.confirmed:
            sub.broken = True
        sub.confirmed = False
        if sub.event.is_set():
            sub.event = trio.Event()
        if self._subs.get(sub.channel) is sub:
            self._unplaced.add(sub)

    def _withdraw(self, sub: _Sub) -> None:
        state = sub.link
        if state is not None and state.link is not None:
            state.link.send("SUNSUBSCRIBE" if sub.sharded else "UNSUBSCRIBE", sub.wire)

    def _place(self) -> None:
        """Send the SUBSCRIBE of every unplaced subscription whose node is reachable."""
        for sub in list(self._unplaced):
            state = self._target(sub)
            if state is None or state.link is None:
                continue
            state.link.send("SSUBSCRIBE" if sub.sharded else "SUBSCRIBE", sub.wire)
            sub.link = state
            state.subs.add(sub)
            self._unplaced.discard(sub)

    def _target(self, sub: _Sub) -> _LinkState | None:
        if not sub.sharded:
            return self._classic
        if self.topology is None:
            return None
        owner = self.topology.owner(sub.slot)
        return self._masters.get(owner) if owner is not None else None

    # -- the interface ----------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Returns once the subscription is in effect; raises ``ConnectionError``
        when its node is unreachable (the wish is kept and fulfilled later)."""
        sub = self._subs.get(channel)
        if sub is None:
            wire, sharded = wire_name(channel)
            sub = _Sub(channel, wire, sharded, slot_of(wire) if sharded else -1)
            self._subs[channel] = sub
            self._by_wire[wire] = sub
            self._unplaced.add(sub)
            self._place()
        if sub.confirmed:
            await trio.lowlevel.checkpoint()
            return
        target = self._target(sub)
        if target is None or not target.connected:
            await trio.lowlevel.checkpoint()
            raise redis.exceptions.ConnectionError(self.reason or f"node of {channel} unreachable")
        event = sub.event
        with trio.move_on_after(SUBSCRIBE_TIMEOUT):
            await event.wait()
        if not sub.confirmed:
            raise redis.exceptions.TimeoutError(f"subscription to {channel!r} not confirmed")

    async def unsubscribe(self, channel: str) -> None:
        await trio.lowlevel.checkpoint()
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        self._by_wire.pop(sub.wire, None)
        self._unplaced.discard(sub)
        self._withdraw(sub)
        if sub.link is not None:
            sub.link.subs.discard(sub)
            sub.link = None

    @property
    def channels(self) -> list[str]:
        return sorted(self._subs)

    def wants(self, channel: str) -> bool:
        return channel in self._subs
