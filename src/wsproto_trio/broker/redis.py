"""The Redis broker: redis-py bridged into trio without trio-asyncio.

How the bridge works, and why:
- Commands (PUBLISH, presence scripts) go through one batching task: whatever is
  queued when the previous round trip ends is sent as one pipeline from a worker
  thread. One thread hop per message would cap a server near 3k publishes/s;
  batched, the hop is shared by every message in the batch.
- Pub/sub is read on the trio thread itself: wait for the socket to be readable
  (``trio.lowlevel.wait_readable``), then drain every complete message with
  ``get_message(timeout=0)`` and hand them to the hub as one batch.
  SUBSCRIBE/UNSUBSCRIBE are written on the trio thread too, so there is no
  cross-thread access to the pub/sub connection.
- A message that arrives in two TCP pieces makes ``get_message(timeout=0)`` raise
  ``TimeoutError`` with the first piece kept in the parser; we wait for more
  bytes. redis-py's retry would instead reconnect and silently drop messages, so
  the pub/sub client retries nothing (``supported_errors=()``) and reconnection is
  ours: capped exponential backoff with jitter, then every wanted channel is
  subscribed again and presence is re-synchronised.
- redis-py is imported here only, and its exceptions become ``BrokerUnavailable``
  in ``_translate``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.client
import redis.exceptions
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..core import messages
from ..core.backoff import Backoff
from ..errors import BrokerUnavailable
from . import BrokerStatus, Server, scripts

log = logging.getLogger("wsproto_trio.broker")

_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_MAX_BATCH = 1000
_SUBSCRIBE_TIMEOUT = 5.0
_PUBSUB_PING_INTERVAL = 5.0


@contextmanager
def _translate() -> Iterator[None]:
    """The one place where redis-py's errors become ours."""
    try:
        yield
    except _REDIS_ERRORS as exc:
        raise BrokerUnavailable(f"redis unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"redis error: {exc}") from exc


@dataclass(slots=True, eq=False)
class _Call:
    args: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class RedisBroker:
    name = "redis"

    def __init__(
        self,
        url: str,
        server_id: str,
        presence_ttl: float = 15.0,
        *,
        prefix: str = "wsproto:",
        command_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.server_id = server_id
        self.presence_ttl = presence_ttl
        self.prefix = prefix
        self.command_timeout = command_timeout
        self._client = self._new_client(retry=Retry(NoBackoff(), 0))
        self._calls_in, self._calls_out = trio.open_memory_channel[_Call](10_000)
        self._server: Server | None = None
        self._pubsub: redis.client.PubSub | None = None
        self._pubsub_client: redis.Redis | None = None
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

    def _new_client(self, retry: Retry) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            protocol=2,
            socket_timeout=self.command_timeout,
            socket_connect_timeout=min(self.command_timeout, 2.0),
            retry=retry,
            health_check_interval=0,
        )

    # -- status ---------------------------------------------------------------

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

    # -- tasks ----------------------------------------------------------------

    async def serve(
        self, server: Server, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._server = server
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_commands)
                await nursery.start(self._serve_pubsub)
                nursery.start_soon(self._serve_presence)
                task_status.started()
        finally:
            self._server = None
            self._connected = False
            self._client.close()

    async def _serve_commands(self) -> None:
        """Send whatever is queued as one pipeline per round trip."""
        async with self._calls_out:
            while True:
                batch = [await self._calls_out.receive()]
                while len(batch) < _MAX_BATCH:
                    try:
                        batch.append(self._calls_out.receive_nowait())
                    except trio.WouldBlock:
                        break
                try:
                    results = await trio.to_thread.run_sync(
                        self._run_pipeline, [call.args for call in batch], abandon_on_cancel=True
                    )
                except _REDIS_ERRORS as exc:
                    failure = BrokerUnavailable(f"redis unreachable: {exc}")
                    for call in batch:
                        call.error = failure
                        call.done.set()
                    continue
                for call, result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        call.error = BrokerUnavailable(f"redis error: {result}")
                    else:
                        call.result = result
                    call.done.set()

    def _run_pipeline(self, batch: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for args in batch:
            pipe.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py is untyped here
        results: list[Any] = pipe.execute(raise_on_error=False)
        return results

    async def _call(self, *args: Any) -> Any:
        call = _Call(args)
        # A bound on the wait as well as on the socket: a wedged Redis must
        # turn into `unavailable` for the client, not a hung reader task.
        with trio.move_on_after(self.command_timeout * 2) as scope:
            try:
                await self._calls_in.send(call)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The command task has stopped (the server is shutting down).
                raise BrokerUnavailable("redis broker stopped") from None
            await call.done.wait()
        if scope.cancelled_caught:
            raise BrokerUnavailable("redis did not answer in time")
        if call.error is not None:
            raise call.error
        return call.result

    async def _serve_pubsub(self, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff()
        started = False
        while True:
            pubsub: redis.client.PubSub | None = None
            try:
                channels = sorted(self._wanted)
                pubsub = await trio.to_thread.run_sync(
                    self._open_pubsub, channels, abandon_on_cancel=True
                )
                self._on_connected(pubsub, channels)
                backoff.reset()
                if not started:
                    task_status.started()
                    started = True
                await self._read(pubsub)
            except _REDIS_ERRORS as exc:
                if self._connected or self._reason == "connecting":
                    log.warning("redis unreachable (%s); retrying with backoff", exc)
                self._reason = f"redis unreachable: {exc}"
            finally:
                self._connected = False
                self._registered = False
                self._pubsub = None
                if pubsub is not None:
                    pubsub.close()
                if self._pubsub_client is not None:
                    self._pubsub_client.close()
                    self._pubsub_client = None
            if not started:
                task_status.started()
                started = True
            await trio.sleep(backoff.next_delay())

    def _open_pubsub(self, channels: list[str]) -> redis.client.PubSub:
        # No retries at all: redis-py's would reconnect on a partial read and
        # drop messages; our loop reconnects and resubscribes instead.
        client = self._new_client(retry=Retry(NoBackoff(), 0, supported_errors=()))
        # Keep the client alive with the pub/sub: collecting a Redis client
        # closes its connection pool, and with it this connection.
        pubsub: redis.client.PubSub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            if channels:
                pubsub.subscribe(*channels)
            else:
                pubsub.ping()
        except BaseException:
            pubsub.close()
            client.close()
            raise
        self._pubsub_client = client
        return pubsub

    def _on_connected(self, pubsub: redis.client.PubSub, channels: list[str]) -> None:
        self._pubsub = pubsub
        self._pending = dict.fromkeys(channels, 1)
        for channel in channels:
            self._fresh_event(channel)
        # Wishes that changed while the connection was being opened.
        for channel in self._wanted.difference(channels):
            self._send_subscribe(channel)
        stale = set(channels).difference(self._wanted)
        if stale:
            pubsub.unsubscribe(*stale)  # type: ignore[no-untyped-call]
        if self._reason != "connecting":
            self._reconnects += 1
            log.info("redis reconnected; resubscribed %d channels", len(channels))
        else:
            log.info("connected to redis at %s", self._safe_url())
        self._connected = True
        self._reason = None
        self._resync = True
        self._wake_presence.set()

    def _safe_url(self) -> str:
        return self.url.split("@")[-1]

    async def _read(self, pubsub: redis.client.PubSub) -> None:
        connection = pubsub.connection
        if connection is None or connection._sock is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        sock = connection._sock
        last_heard = trio.current_time()
        while True:
            batch: list[tuple[str, str]] = []
            while True:
                try:
                    message = pubsub.get_message(timeout=0)
                except redis.exceptions.TimeoutError:
                    break  # half a message is buffered; wait for the rest
                if message is None:
                    break
                last_heard = trio.current_time()
                kind = message["type"]
                if kind == "message":
                    batch.append((message["channel"], message["data"]))
                    if len(batch) >= _MAX_BATCH:
                        self._deliver(batch)
                        batch = []
                elif kind == "subscribe":
                    self._confirm(message["channel"])
            if batch:
                self._deliver(batch)
            with trio.move_on_after(_PUBSUB_PING_INTERVAL) as scope:
                await trio.lowlevel.wait_readable(sock)
            if scope.cancelled_caught:
                if trio.current_time() - last_heard > 3 * _PUBSUB_PING_INTERVAL:
                    raise redis.exceptions.ConnectionError("no answer to PING on pub/sub")
                pubsub.ping()

    def _deliver(self, batch: list[tuple[str, str]]) -> None:
        if self._server is not None:
            self._server.deliver(batch)

    def _confirm(self, channel: str) -> None:
        left = self._pending.get(channel, 0) - 1
        if left > 0:
            self._pending[channel] = left
            return
        self._pending.pop(channel, None)
        if channel in self._wanted:
            event = self._confirmed.get(channel)
            if event is not None:
                event.set()
        else:
            self._confirmed.pop(channel, None)

    def _send_subscribe(self, channel: str) -> None:
        if self._pubsub is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        self._pending[channel] = self._pending.get(channel, 0) + 1
        self._fresh_event(channel)
        self._pubsub.subscribe(channel)

    def _fresh_event(self, channel: str) -> None:
        """An unset confirmation event; one still unset is kept for its waiters."""
        event = self._confirmed.get(channel)
        if event is None or event.is_set():
            self._confirmed[channel] = trio.Event()

    async def _serve_presence(self) -> None:
        """Renew this server's lease, resync after reconnects, reap dead servers."""
        interval = self.presence_ttl / 3
        ttl_ms = max(1, math.ceil(self.presence_ttl * 1000))
        while True:
            self._wake_presence = trio.Event()
            if self._connected and self._server is not None and not self._deregistered:
                try:
                    existed = await self._call(
                        "EVAL", scripts.RENEW, 2, self._key("servers"),
                        self._key(f"server:{self.server_id}"),
                        self.server_id, ttl_ms, self._server.connection_count,
                    )  # fmt: skip
                    if not existed or self._resync:
                        await self.resync()
                    self._registered = True
                    await self.reap_expired()
                except BrokerUnavailable as exc:
                    self._registered = False
                    log.warning("presence renewal failed: %s", exc)
            with trio.move_on_after(interval):
                await self._wake_presence.wait()

    async def resync(self) -> None:
        """Make Redis hold exactly this server's live members."""
        if self._server is None:
            return
        tokens = [f"{user}\n{room}" for room, user in self._server.local_members()]
        added = await self._call(
            "EVAL", scripts.SYNC, 1, self._key(f"server:{self.server_id}:members"),
            self.prefix, self.server_id, *tokens,
        )  # fmt: skip
        self._resync = False
        if added:
            log.info("presence re-registered %d members", added)

    async def reap_expired(self) -> list[tuple[str, str, str]]:
        flat = await self._call("EVAL", scripts.REAP, 1, self._key("servers"), self.prefix, "")
        reaped = [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]
        if reaped:
            servers = sorted({server for server, _, _ in reaped})
            log.warning("reaped %d members of dead servers %s", len(reaped), servers)
        return reaped

    def _key(self, name: str) -> str:
        return self.prefix + name

    # -- broker interface -----------------------------------------------------

    async def publish(self, channel: str, payload: str) -> None:
        await self._call("PUBLISH", channel, payload)

    async def subscribe(self, channel: str) -> None:
        newly_wanted = channel not in self._wanted
        self._wanted.add(channel)
        if not self._connected:
            raise BrokerUnavailable(self._reason or "redis unreachable")
        if newly_wanted:
            with _translate():
                self._send_subscribe(channel)
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
        if self._connected and self._pubsub is not None:
            with _translate():
                self._pubsub.unsubscribe(channel)  # type: ignore[no-untyped-call]

    async def join(self, room: str, user: str, announce: str) -> list[str]:
        users = await self._call(
            "EVAL", scripts.JOIN, 3, self._key(f"room:{room}"),
            self._key(f"server:{self.server_id}:members"), self._key("rooms"),
            user, self.server_id, room, messages.room_channel(room), announce,
        )  # fmt: skip
        return list(users)

    async def leave(self, room: str, user: str, announce: str) -> bool:
        removed = await self._call(
            "EVAL", scripts.LEAVE, 3, self._key(f"room:{room}"),
            self._key(f"server:{self.server_id}:members"), self._key("rooms"),
            user, self.server_id, room, messages.room_channel(room), announce,
        )  # fmt: skip
        return bool(removed)

    async def members(self, room: str) -> list[str]:
        return list(await self._call("HKEYS", self._key(f"room:{room}")))

    async def rooms(self) -> dict[str, int]:
        flat = await self._call("EVAL", scripts.ROOMS, 1, self._key("rooms"), self.prefix)
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def servers(self) -> dict[str, int]:
        flat = await self._call("EVAL", scripts.SERVERS, 1, self._key("servers"), self.prefix)
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def deregister(self) -> None:
        self._deregistered = True
        await self._call("EVAL", scripts.REAP, 1, self._key("servers"), self.prefix, self.server_id)
        self._registered = False
