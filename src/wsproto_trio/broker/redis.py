"""The Redis broker: pub/sub, history and presence on one Redis.

It owns three tasks (``serve``): the command pipe, the pub/sub link with its
reconnect loop, and presence (lease renewal, connection counts, resync,
reaping). The redis-py-to-trio bridge is ``bridge.py``; the scripts and the key
layout are ``scripts.py``.

Reconnects: the pub/sub link retries with capped exponential backoff and
jitter; every wanted channel is subscribed again, each confirmation is reported
to the listener (``resubscribed``) so the hub fills what it missed from
history, and presence is re-synchronised.

Naming (``wire``, ``stream_keys``, ``members_key``) and the publish command
are methods so that the cluster broker can change them and keep the rest.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import redis
import redis.connection
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..core import messages
from ..core.backoff import Backoff
from ..core.messages import Template
from ..core.positions import Position, StreamState
from ..core.presence import lease_seconds, tick_seconds
from ..errors import BrokerUnavailable
from . import BrokerStatus, Joined, Listener, Member, Published, scripts
from .bridge import REDIS_ERRORS, CommandPipe, PubSubLink, Script, log

_SUBSCRIBE_TIMEOUT = 5.0
_PUBSUB_PING_INTERVAL = 5.0
_COUNT_INTERVAL = 0.5  # connection counts in Redis are at most this (plus a round trip) old

PUBLISH_MESSAGE = Script(scripts.PUBLISH_MESSAGE)
STREAM = Script(scripts.STREAM)
JOIN = Script(scripts.JOIN)
LEAVE = Script(scripts.LEAVE)
ENSURE = Script(scripts.ENSURE)
RENEW = Script(scripts.RENEW)
EXPIRED = Script(scripts.EXPIRED)
LIVE = Script(scripts.LIVE)
UNINDEX = Script(
    "if redis.call('HLEN', KEYS[2]) == 0 then return redis.call('SREM', KEYS[1], ARGV[1]) end"
    " return 0"
)


def member_value(server_id: str, member: Member) -> str:
    """How presence stores a member: owner, LeftRoom, JoinedRoom, record."""
    return f"{server_id}\n{member.left}\n{member.joined}\n{member.record}"


class RedisBroker:
    name = "redis"
    publish_command = "PUBLISH"

    def __init__(
        self,
        url: str,
        server_id: str,
        presence_ttl: float = 15.0,
        *,
        history_size: int = 100,
        history_ttl: float = 300.0,
        prefix: str = "wsproto:",
        command_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.server_id = server_id
        self.presence_ttl = presence_ttl
        self.history_size = history_size
        self.history_ttl_ms = max(1, math.ceil(history_ttl * 1000))
        self.prefix = prefix
        self.command_timeout = command_timeout
        self._client = self._new_client()
        self.pipe = CommandPipe(self._client, command_timeout)
        self._listener: Listener | None = None
        self._link: PubSubLink | None = None
        self._wanted: set[str] = set()
        self._pending: dict[str, int] = {}  # channel -> SUBSCRIBEs not yet confirmed
        self._confirmed: dict[str, trio.Event] = {}
        self._connected = False
        self._registered = False
        self._resync = True
        self._wake_presence = trio.Event()
        self._reason: str | None = "connecting"
        self._reconnects = 0
        self._deregistered = False  # after a clean exit's deregister, stop renewing
        self._epoch_base = secrets.token_urlsafe(6)
        self._epoch_serial = 0

    def _new_client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            protocol=2,
            socket_timeout=self.command_timeout,
            socket_connect_timeout=min(self.command_timeout, 2.0),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    def _new_pubsub_connection(self) -> redis.connection.AbstractConnection:
        # No retries at all: redis-py's would reconnect on a partial read and
        # drop messages; our loop reconnects and fills the gaps instead.
        pool = self._client.connection_pool
        connection: redis.connection.AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0, supported_errors=())}
        )
        return connection

    # -- naming (the cluster broker overrides these) ----------------------------

    def wire(self, channel: str) -> str:
        """The Redis channel of a logical channel."""
        return channel

    def logical(self, wire: str) -> str:
        return wire

    def room_tag(self, room: str) -> str:
        """What goes between the braces of a room's keys (its hash tag)."""
        return room

    def stream_keys(self, channel: str) -> tuple[str, str]:
        """The meta and log keys of a channel's stream (one hash slot)."""
        if channel.startswith(messages.ROOM_PREFIX):
            base = f"{self.prefix}room:{{{self.room_tag(channel[len(messages.ROOM_PREFIX) :])}}}"
        else:
            base = f"{self.prefix}{{{channel}}}"
        return f"{base}:meta", f"{base}:log"

    def members_key(self, room: str) -> str:
        return f"{self.prefix}room:{{{self.room_tag(room)}}}:members"

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _epoch_candidate(self) -> str:
        """A fresh epoch for a stream whose meta is missing (used only then)."""
        self._epoch_serial += 1
        return f"{self._epoch_base}{self._epoch_serial:x}"[-32:]

    # -- status -----------------------------------------------------------------

    def status(self) -> BrokerStatus:
        ready = self._connected and self._registered and not self._unconfirmed()
        return BrokerStatus(self._connected, ready, self._reason, self._reconnects)

    def _unconfirmed(self) -> bool:
        # Room channels come and go with members; a room being subscribed is
        # not a reason to take the whole server out of the load balancer.
        return any(
            self._pending.get(channel, 0)
            for channel in self._wanted
            if not channel.startswith(messages.ROOM_PREFIX)
        )

    # -- tasks --------------------------------------------------------------------

    async def serve(
        self, listener: Listener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._listener = listener
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pipe.serve)
                await nursery.start(self._serve_pubsub)
                nursery.start_soon(self._serve_presence)
                nursery.start_soon(self._serve_counts)
                task_status.started()
        finally:
            self._listener = None
            self._connected = False
            self._client.close()

    async def _serve_pubsub(self, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff()
        started = False
        while True:
            link = PubSubLink(self._new_pubsub_connection(), self.command_timeout)
            try:
                await link.open()
                await self._on_connected(link)
                backoff.reset()
                if not started:
                    task_status.started()
                    started = True
                await self._read(link)
            except REDIS_ERRORS as exc:
                if self._connected or self._reason == "connecting":
                    log.warning("redis unreachable (%s); retrying with backoff", exc)
                self._reason = f"redis unreachable: {exc}"
            finally:
                self._connected = False
                self._registered = False
                self._link = None
                link.close()
            if not started:
                task_status.started()
                started = True
            await trio.sleep(backoff.next_delay())

    async def _on_connected(self, link: PubSubLink) -> None:
        channels = sorted(self._wanted)
        self._pending = dict.fromkeys(channels, 1)
        for channel in channels:
            self._fresh_event(channel)
        if channels:
            await link.send("SUBSCRIBE", *(self.wire(c) for c in channels))
        else:
            await link.send("PING")
        self._link = link
        if self._reason != "connecting":
            self._reconnects += 1
            log.info("redis reconnected; resubscribing %d channels", len(channels))
        else:
            log.info("connected to redis at %s", self.url.split("@")[-1])
        self._connected = True
        self._reason = None
        self._resync = True
        self._wake_presence.set()
        # Wishes that changed while the SUBSCRIBE was being written.
        for channel in self._wanted.difference(channels):
            await self._send_subscribe(channel)
        stale = set(channels).difference(self._wanted)
        if stale:
            await link.send("UNSUBSCRIBE", *(self.wire(c) for c in stale))

    async def _read(self, link: PubSubLink) -> None:
        last_heard = trio.current_time()
        while True:
            batch: list[tuple[str, str]] = []
            confirmed: list[str] = []
            for reply in link.drain():
                last_heard = trio.current_time()
                kind = reply[0]
                if kind == "message":
                    batch.append((self.logical(reply[1]), reply[2]))
                elif kind == "subscribe":
                    channel = self.logical(reply[1])
                    if self._confirm(channel):
                        confirmed.append(channel)
            if batch and self._listener is not None:
                self._listener.deliver(batch)
            if confirmed and self._listener is not None:
                self._listener.resubscribed(confirmed)
            if not await link.wait_readable(_PUBSUB_PING_INTERVAL):
                if trio.current_time() - last_heard > 3 * _PUBSUB_PING_INTERVAL:
                    raise redis.exceptions.ConnectionError("no answer to PING on pub/sub")
                await link.send("PING")

    def _confirm(self, channel: str) -> bool:
        """Count a SUBSCRIBE confirmation; True when the channel is now in effect."""
        left = self._pending.get(channel, 0) - 1
        if left > 0:
            self._pending[channel] = left
            return False
        self._pending.pop(channel, None)
        if channel in self._wanted:
            event = self._confirmed.get(channel)
            if event is not None:
                event.set()
            return True
        self._confirmed.pop(channel, None)
        return False

    async def _send_subscribe(self, channel: str) -> None:
        link = self._link
        if link is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        self._pending[channel] = self._pending.get(channel, 0) + 1
        self._fresh_event(channel)
        await link.send("SUBSCRIBE", self.wire(channel))

    def _fresh_event(self, channel: str) -> None:
        """An unset confirmation event; one still unset is kept for its waiters."""
        event = self._confirmed.get(channel)
        if event is None or event.is_set():
            self._confirmed[channel] = trio.Event()

    # -- presence -----------------------------------------------------------------

    async def _serve_presence(self) -> None:
        """Renew this server's lease, resync after reconnects, reap dead servers."""
        interval = tick_seconds(self.presence_ttl)
        while True:
            self._wake_presence = trio.Event()
            if self._connected and self._listener is not None and not self._deregistered:
                try:
                    existed = await self._renew()
                    if not existed or self._resync:
                        await self.resync()
                    self._registered = True
                    await self.reap_expired()
                except BrokerUnavailable as exc:
                    self._registered = False
                    log.warning("presence renewal failed: %s", exc)
            with trio.move_on_after(interval):
                await self._wake_presence.wait()

    async def _renew(self) -> bool:
        assert self._listener is not None
        ttl_ms = max(1, math.ceil(lease_seconds(self.presence_ttl) * 1000))
        existed = await self.pipe.script(
            RENEW, [self._key("servers"), self._key(f"server:{self.server_id}")],
            self.server_id, ttl_ms, self._listener.connection_count,
        )  # fmt: skip
        return bool(existed)

    async def _serve_counts(self) -> None:
        """Keep this server's connection count in Redis fresh between renewals
        (``/api/servers`` promises counts at most a second old)."""
        written = -1
        while True:
            await trio.sleep(_COUNT_INTERVAL)
            listener = self._listener
            if listener is None or not self._registered or self._deregistered:
                continue
            count = listener.connection_count
            if count == written:
                continue
            try:
                await self.pipe.call(
                    "HSET", self._key(f"server:{self.server_id}"), "connections", count
                )
                written = count
            except BrokerUnavailable:
                written = -1

    def _token(self, member: Member) -> str:
        return f"{member.user}\n{member.room}"

    async def resync(self) -> None:
        """Make Redis hold exactly this server's live members (after an outage,
        or after finding this server reaped): stale ones leave, missing ones
        are added and announced as new joins."""
        if self._listener is None:
            return
        local = {self._token(m): m for m in self._listener.local_members()}
        owned_key = self._key(f"server:{self.server_id}:members")
        owned: list[str] = await self.pipe.call("SMEMBERS", owned_key)
        for token in owned:
            if token not in local:
                user, room = token.split("\n", 1)
                await self._remove(room, user, self.server_id)
        added = 0
        for member in local.values():
            room = member.room
            results = await self.pipe.call_many(
                [
                    ("SADD", owned_key, self._token(member)),
                    ("SADD", self._key("rooms"), room),
                    ENSURE.call(
                        [self.members_key(room)],
                        member.user,
                        member_value(self.server_id, member),
                        self.server_id,
                        member.joined,
                        self.wire(messages.room_channel(room)),
                        self.publish_command,
                    ),
                ],
            )
            added += int(results[2])
        self._resync = False
        if added:
            log.info("presence re-registered %d members", added)

    async def _remove(self, room: str, user: str, owner: str) -> bool:
        """One member out, announced by its own LeftRoom if it was there."""
        removed, remaining = await self.pipe.script(
            LEAVE, [self.members_key(room)],
            user, owner, self.wire(messages.room_channel(room)), self.publish_command,
        )  # fmt: skip
        await self.pipe.call("SREM", self._key(f"server:{owner}:members"), f"{user}\n{room}")
        if not remaining:
            await self.pipe.script(UNINDEX, [self._key("rooms"), self.members_key(room)], room)
        return bool(removed)

    async def reap_expired(self) -> list[tuple[str, str, str]]:
        """Remove every server whose lease lapsed, with its members; each member
        is announced once however many servers reap at the same time."""
        dead: list[str] = await self.pipe.script(EXPIRED, [self._key("servers")])
        reaped: list[tuple[str, str, str]] = []
        for sid in dead:
            if sid == self.server_id:
                continue
            reaped.extend(await self._reap(sid))
        if reaped:
            servers = sorted({server for server, _, _ in reaped})
            log.warning("reaped %d members of dead servers %s", len(reaped), servers)
        return reaped

    async def _reap(self, sid: str) -> list[tuple[str, str, str]]:
        reaped: list[tuple[str, str, str]] = []
        tokens: list[str] = await self.pipe.call("SMEMBERS", self._key(f"server:{sid}:members"))
        for token in tokens:
            user, room = token.split("\n", 1)
            if await self._remove(room, user, sid):
                reaped.append((sid, room, user))
        # Last, so that a reaper that dies half-way leaves the lease for the next one.
        await self.pipe.call_many(
            [
                ("DEL", self._key(f"server:{sid}:members")),
                ("DEL", self._key(f"server:{sid}")),
                ("ZREM", self._key("servers"), sid),
            ]
        )
        return reaped

    # -- broker interface ---------------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        await self.pipe.call("PUBLISH", self.wire(channel), payload)

    async def publish_message(self, channel: str, message: Template) -> Position:
        top, epoch = await self.pipe.call(*self._publish_message_command(channel, message))
        return Position(int(top), epoch)

    async def submit_message(self, channel: str, message: Template, done: Published) -> None:
        def then(_result: Any, error: BrokerUnavailable | None) -> None:
            done(error)

        await self.pipe.submit(self._publish_message_command(channel, message), then)

    def _publish_message_command(self, channel: str, message: Template) -> tuple[Any, ...]:
        return PUBLISH_MESSAGE.call(
            self.stream_keys(channel),
            self.wire(channel), message.head, message.tail, self._epoch_candidate(),
            self.history_ttl_ms, self.history_size, self._publish_command(channel),
        )  # fmt: skip

    def _publish_command(self, channel: str) -> str:
        return self.publish_command if channel.startswith(messages.ROOM_PREFIX) else "PUBLISH"

    async def stream(self, channel: str, *, with_log: bool) -> StreamState:
        flat = await self.pipe.script(
            STREAM, self.stream_keys(channel),
            self._epoch_candidate(), self.history_ttl_ms, "1" if with_log else "0",
        )  # fmt: skip
        return StreamState(Position(int(flat[1]), flat[0]), tuple(flat[2:]))

    async def subscribe(self, channel: str) -> None:
        newly_wanted = channel not in self._wanted
        self._wanted.add(channel)
        if not self._connected:
            raise BrokerUnavailable(self._reason or "redis unreachable")
        if newly_wanted:
            try:
                await self._send_subscribe(channel)
            except REDIS_ERRORS as exc:
                raise BrokerUnavailable(f"redis unreachable: {exc}") from exc
        event = self._confirmed[channel]
        with trio.move_on_after(_SUBSCRIBE_TIMEOUT):
            await event.wait()
        if not event.is_set():
            raise BrokerUnavailable(f"subscription to {channel!r} not confirmed")

    async def unsubscribe(self, channel: str) -> None:
        await trio.lowlevel.checkpoint()
        self._wanted.discard(channel)
        if channel not in self._pending:
            self._confirmed.pop(channel, None)
        link = self._link
        if self._connected and link is not None:
            try:
                await link.send("UNSUBSCRIBE", self.wire(channel))
            except REDIS_ERRORS as exc:
                raise BrokerUnavailable(f"redis unreachable: {exc}") from exc

    async def join(self, member: Member, *, with_log: bool) -> Joined:
        room = member.room
        meta, log_key = self.stream_keys(messages.room_channel(room))
        results = await self.pipe.call_many(
            [
                ("SADD", self._key(f"server:{self.server_id}:members"), self._token(member)),
                JOIN.call(
                    [meta, log_key, self.members_key(room)],
                    self._epoch_candidate(),
                    self.history_ttl_ms,
                    "1" if with_log else "0",
                    member.user,
                    member_value(self.server_id, member),
                    member.joined,
                    self.wire(messages.room_channel(room)),
                    self.publish_command,
                ),
                ("SADD", self._key("rooms"), room),
            ],
        )
        flat = results[1]
        epoch, top, count = flat[0], int(flat[1]), int(flat[2])
        log_entries = tuple(flat[3 : 3 + count])
        rest = flat[3 + count :]
        return Joined(
            users=list(rest[0::2]),
            records=list(rest[1::2]),
            stream=StreamState(Position(top, epoch), log_entries),
        )

    async def leave(self, member: Member) -> bool:
        return await self._remove(member.room, member.user, self.server_id)

    async def members(self, room: str) -> list[str]:
        return list(await self.pipe.call("HKEYS", self.members_key(room)))

    async def rooms(self) -> dict[str, int]:
        names: list[str] = await self.pipe.call("SMEMBERS", self._key("rooms"))
        counts = await self.pipe.call_many([("HLEN", self.members_key(n)) for n in names])
        return {name: int(n) for name, n in zip(names, counts, strict=True) if int(n) > 0}

    async def servers(self) -> dict[str, int]:
        live: list[str] = await self.pipe.script(LIVE, [self._key("servers")])
        counts = await self.pipe.call_many(
            [("HGET", self._key(f"server:{sid}"), "connections") for sid in live]
        )
        return {sid: int(n or 0) for sid, n in zip(live, counts, strict=True)}

    async def deregister(self) -> None:
        self._deregistered = True
        await self._reap(self.server_id)
        self._registered = False
