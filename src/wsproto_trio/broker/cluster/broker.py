"""The Redis Cluster broker: the single-Redis broker's scripts and presence, with
sharded pub/sub for rooms and commands routed per master.

What differs from ``RedisBroker``, and only this:
- naming: a room's sharded channel is ``room:{R}`` and its keys share that
  hash tag, so each room's scripts (join, leave, publish, stream) run on its
  shard, atomically; rooms are published with ``SPUBLISH``; the chat and pings
  stay classic ``PUBLISH``, which a cluster carries to every node;
- pub/sub: the bridge of ``bridge.py`` (a link per master, plus one classic link);
- commands: ``RedisCluster`` (MOVED/ASK handled) behind one pipe per master
  (``commands.py``), so a failing master delays only its own rooms;
- server-level keys live in different slots, so what the single-Redis broker
  does in one script across them is done here as separate commands: the lease
  (``servers``, Redis time of the node that holds it) apart from the server's
  hash, and a room's removal from the ``rooms`` index re-checked after the fact.

Presence keeps the single-Redis rules: a member's LEAVE is conditional on its
owner, so any number of servers reaping a crashed one announce each member once.
After a failover (the set of masters changed) a master may have lost its last
writes, so presence is re-synchronised as after a reconnect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import redis
import redis.exceptions
import trio
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from ...core import messages
from ...core.positions import Position
from ...core.presence import lease_seconds
from ...errors import BrokerUnavailable
from .. import BrokerStatus, Listener
from ..bridge import Script, log
from ..redis import ENSURE, LEAVE, RedisBroker, member_value
from .bridge import ShardedPubSub, ShardStats, room_tag, wire_name
from .commands import ShardRouter
from .topology import Address, slot_of

LEASE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local existed = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if existed then return 1 else return 0 end
"""
)


# KEYS meta, log; ARGV epoch seen, offset seen, new epoch, ttl ms -> 1 if reset.
# The stream's master lost writes that this server saw (a failover promoted a
# replica that had not received them): its offsets would be given out again to
# other messages. The history is lost, so the stream takes a new epoch.
FORGET_LOST = Script(
    """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'top')) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'top', 0)
redis.call('DEL', KEYS[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""
)


def _position(payload: str) -> Position | None:
    """The position of ``"<offset> <epoch> <envelope>"``, read without copying the
    envelope; ``None`` for a plain payload (an envelope, a ping number)."""
    first = payload.find(" ", 0, 24)
    if first <= 0 or not payload[:first].isdigit():
        return None
    second = payload.find(" ", first + 1, first + 34)
    if second < 0:
        return None
    return Position(int(payload[:first]), payload[first + 1 : second])


class _Forward:
    """The bridge's sink: hands everything on to the broker's listener, noting
    the highest position seen per stream on the way."""

    def __init__(self, broker: ClusterBroker) -> None:
        self._broker = broker

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        seen = self._broker.seen
        for channel, payload in batch:
            position = _position(payload)
            if position is not None:
                seen[channel] = position
        listener = self._broker.listener
        if listener is not None:
            listener.deliver(batch)

    def resubscribed(self, channels: Sequence[str]) -> None:
        listener = self._broker.listener
        if listener is not None:
            listener.resubscribed(channels)


class ClusterBroker(RedisBroker):
    name = "redis-cluster"
    publish_command = "SPUBLISH"

    def __init__(
        self,
        nodes: Sequence[Address],
        server_id: str,
        presence_ttl: float = 15.0,
        *,
        history_size: int = 100,
        history_ttl: float = 300.0,
        prefix: str = "wsproto:",
        command_timeout: float = 5.0,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster broker needs at least one seed node")
        self.nodes = tuple(nodes)
        self.seen: dict[str, Position] = {}  # stream -> the latest position delivered here
        self._suspects: set[Address] = set()  # new masters: they may lack acknowledged writes
        self._lease_lost = False
        self.pubsub = ShardedPubSub(
            self.nodes, server_id, timeout=command_timeout, on_change=self._on_change
        )
        host, port = self.nodes[0]
        super().__init__(
            f"redis://{host}:{port}/0", server_id, presence_ttl,
            history_size=history_size, history_ttl=history_ttl, prefix=prefix,
            command_timeout=command_timeout,
        )  # fmt: skip
        # RedisBroker's own client (never connected here) stands in where the
        # base pipe wants one; every command goes through a RedisCluster.
        self.pipe = ShardRouter(
            self._client, self._new_cluster_client, command_timeout, lambda: self.pubsub.topology
        )

    def _new_cluster_client(self) -> redis.RedisCluster:
        """Called in a pipe's worker thread: it reads the cluster's slots."""
        return redis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],  # type: ignore[no-untyped-call]
            decode_responses=True,
            protocol=2,
            socket_timeout=self.command_timeout,
            socket_connect_timeout=min(self.command_timeout, 2.0),
            retry=Retry(NoBackoff(), 1),
            require_full_coverage=False,  # a failing shard must not stop the others
        )

    @property
    def listener(self) -> Listener | None:
        return self._listener

    # -- naming -------------------------------------------------------------------

    def wire(self, channel: str) -> str:
        return wire_name(channel)[0]

    def logical(self, wire: str) -> str:
        raise NotImplementedError("the cluster bridge maps channels itself")

    def room_tag(self, room: str) -> str:
        return room_tag(room)  # never an empty hash tag (a room starting with '}')

    # -- status -------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        reason = self.pubsub.reason
        connected = reason is None
        ready = connected and self._registered and self.pubsub.ready
        reconnects = sum(stats.reconnects for stats in self.pubsub.stats())
        return BrokerStatus(connected, ready, reason, reconnects)

    def shard_stats(self) -> list[ShardStats]:
        """Per pub/sub link (one per master, one classic): for /metrics."""
        return self.pubsub.stats()

    def _on_change(self, masters_changed: bool) -> None:
        # Presence and commands need a topology, not every shard: a failing
        # master must not stop the lease (its lapse would get us reaped).
        self._connected = self.pubsub.topology is not None
        if self._connected and self._reason == "connecting":
            self._reason = None
        if masters_changed:
            self.suspect(self.pubsub.promoted)

    def suspect(self, masters: set[Address]) -> None:
        """``masters`` were promoted (or added): check the streams they hold
        against what this server has seen, and re-register presence."""
        self._suspects |= masters
        self._resync = True
        self._wake_presence.set()

    # -- tasks --------------------------------------------------------------------

    async def _serve_pubsub(self, task_status: trio.TaskStatus[None]) -> None:
        await self.pubsub.serve(_Forward(self), task_status=task_status)

    async def resync(self) -> None:
        """After a failover as after a reconnect: first streams that lost writes
        take a new epoch, then presence is made whole again. After a failover
        that spared this server's own keys, only the rooms on the promoted
        masters are re-registered (a full resync is a command per member per
        server, a storm on a big cluster)."""
        suspects = set(self._suspects)
        await self._forget_lost_writes()
        topology = self.pubsub.topology
        own = [self._key(k) for k in ("servers", "rooms", f"server:{self.server_id}:members")]
        if (
            self._lease_lost
            or not suspects
            or topology is None
            or any(topology.owner(slot_of(key)) in suspects for key in own)
        ):
            await super().resync()
            self._lease_lost = False
            return
        await self._reensure(
            lambda room: topology.owner(slot_of(self.members_key(room))) in suspects
        )
        self._resync = False

    async def _reensure(self, affected: Callable[[str], bool]) -> None:
        """Put back (and announce) this server's members of the affected rooms
        that a promoted master lacks."""
        if self._listener is None:
            return
        members = [m for m in self._listener.local_members() if affected(m.room)]
        if not members:
            return
        results = await self.pipe.call_many(
            [
                ENSURE.call(
                    [self.members_key(m.room)],
                    m.user,
                    member_value(self.server_id, m),
                    self.server_id,
                    m.joined,
                    self.wire(messages.room_channel(m.room)),
                    self.publish_command,
                )
                for m in members
            ]
        )
        added = sum(int(r) for r in results)
        if added:
            log.info("presence re-registered %d members after a failover", added)

    async def _forget_lost_writes(self) -> None:
        """Compare each stream this server follows on a new master with what it
        has seen (a master that was already one lost nothing it acknowledged)."""
        self.seen = {c: p for c, p in self.seen.items() if self.pubsub.wants(c)}
        suspects, self._suspects = self._suspects, set()
        topology = self.pubsub.topology
        if not suspects or topology is None:
            return
        seen = [
            (channel, position)
            for channel, position in self.seen.items()
            if topology.owner(slot_of(self.stream_keys(channel)[0])) in suspects
        ]
        if not seen:
            return
        try:
            results = await self._forget(seen)
        except BrokerUnavailable:
            self._suspects |= suspects  # try again at the next resync
            raise
        lost = [channel for (channel, _), reset in zip(seen, results, strict=True) if reset]
        if lost:
            log.warning("failover lost the latest messages of %d streams; new epochs", len(lost))

    async def _forget(self, seen: list[tuple[str, Position]]) -> list[int]:
        return await self.pipe.call_many(
            [
                FORGET_LOST.call(
                    self.stream_keys(channel),
                    position.epoch,
                    position.offset,
                    self._epoch_candidate(),
                    self.history_ttl_ms,
                )
                for channel, position in seen
            ]
        )

    async def _renew(self) -> bool:
        assert self._listener is not None
        ttl_ms = max(1, math.ceil(lease_seconds(self.presence_ttl) * 1000))
        server_key = self._key(f"server:{self.server_id}")
        existed, _, _ = await self.pipe.call_many(
            [
                LEASE.call([self._key("servers")], self.server_id, ttl_ms),
                ("HSET", server_key, "connections", self._listener.connection_count),
                ("PEXPIRE", server_key, ttl_ms * 2),
            ]
        )
        if not existed:
            self._lease_lost = True  # reaped, or the lease's master lost it: resync all
        return bool(existed)

    async def _remove(self, room: str, user: str, owner: str) -> bool:
        removed, remaining = await self.pipe.script(
            LEAVE, [self.members_key(room)],
            user, owner, self.wire(messages.room_channel(room)), self.publish_command,
        )  # fmt: skip
        await self.pipe.call("SREM", self._key(f"server:{owner}:members"), f"{user}\n{room}")
        if not remaining:
            await self._unindex(room)
        return bool(removed)

    async def _unindex(self, room: str) -> None:
        """Drop an empty room from the index. Not atomic across slots, so: remove,
        then look again, and put it back if someone joined meanwhile (a joiner
        adds the room to the index after its join, so one of us sees the other)."""
        await self.pipe.call("SREM", self._key("rooms"), room)
        if int(await self.pipe.call("HLEN", self.members_key(room))):
            await self.pipe.call("SADD", self._key("rooms"), room)

    # -- pub/sub ------------------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        wire, sharded = wire_name(channel)
        await self.pipe.call("SPUBLISH" if sharded else "PUBLISH", wire, payload)

    async def subscribe(self, channel: str) -> None:
        try:
            await self.pubsub.subscribe(channel)
        except (OSError, redis.exceptions.RedisError) as exc:
            raise BrokerUnavailable(f"redis cluster: {exc}") from exc

    async def unsubscribe(self, channel: str) -> None:
        await self.pubsub.unsubscribe(channel)
