"""One pub/sub connection to one cluster node, read and written on the trio thread.

Why not redis-py's ``PubSub``/``ClusterPubSub``: they resubscribe by themselves
after a reconnect (in one ``SSUBSCRIBE`` that a cluster refuses with CROSSSLOT
when the channels span slots, redis/redis-py#4038), follow a moved slot only
when their slot cache happens to refresh (#4044), and do not handle the
``sunsubscribe`` that Redis pushes when a slot moves away. So a link is a bare
redis-py ``Connection`` (its parser, hiredis when installed) with no retries:

- reads: wait until the socket is readable, then drain every complete reply
  with ``read_response(timeout=0)``; a reply cut in two TCP pieces raises
  ``TimeoutError`` with the first piece kept in the parser, and we wait for more;
- writes: commands are packed into one outgoing buffer and sent without
  blocking (``wait_writable`` with a deadline); one ``SSUBSCRIBE`` per channel,
  so no command spans two slots;
- replies to our commands come back in order, pushes (messages, unsolicited
  ``sunsubscribe``) in between: a FIFO of expected replies tells them apart.
  A ``sunsubscribe`` that is not at the head of the FIFO is a push: the node no
  longer owns that channel's slot.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass
from typing import Any

import redis.connection
import redis.exceptions
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from .topology import Address

PING_INTERVAL = 5.0
BROKEN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Message:
    wire: str
    data: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    wire: str
    settled: bool  # no other SUBSCRIBE of this channel is still unanswered


@dataclass(frozen=True, slots=True)
class Dropped:
    """The node ended a subscription by itself (its slot moved or was lost)."""

    wire: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A (S)SUBSCRIBE answered with an error: MOVED, CLUSTERDOWN, TRYAGAIN..."""

    wire: str
    error: redis.exceptions.ResponseError


Event = Message | Subscribed | Dropped | Refused

_SUBSCRIBE = {"SSUBSCRIBE": "ssubscribe", "SUBSCRIBE": "subscribe"}
_UNSUBSCRIBE = {"SUNSUBSCRIBE": "sunsubscribe", "UNSUBSCRIBE": "unsubscribe"}


class Link:
    def __init__(self, address: Address, connection: redis.connection.Connection) -> None:
        self.address = address
        # redis-py's Connection is untyped: keep it as Any in this one place.
        self._connection: Any = connection
        sock = self._connection._sock
        if sock is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        self._sock: socket.socket = sock
        self._out: bytearray = bytearray()
        self._more: trio.Event = trio.Event()
        self._expected: collections.deque[tuple[str, str]] = collections.deque()
        self._pending: dict[str, int] = {}  # wire -> SUBSCRIBEs not yet answered
        self._heard: float = trio.current_time()
        self.write_timeout: float = self._connection.socket_timeout or 5.0

    @classmethod
    async def open(cls, address: Address, *, socket_timeout: float) -> Link:
        def connect() -> redis.connection.Connection:
            connection = redis.connection.Connection(
                host=address[0], port=address[1], decode_responses=True, protocol=2,
                socket_timeout=socket_timeout, socket_connect_timeout=min(socket_timeout, 2.0),
                retry=Retry(NoBackoff(), 0, supported_errors=()), health_check_interval=0,
            )  # type: ignore[no-untyped-call]  # fmt: skip  # redis-py's Connection is untyped
            connection.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
            return connection

        connection = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
        return cls(address, connection)

    def close(self) -> None:
        self._connection.disconnect()

    # -- writing ----------------------------------------------------------------

    def send(self, command: str, wire: str | None = None) -> None:
        """Queue a command; never blocks (``serve_writes`` sends it)."""
        args = (command,) if wire is None else (command, wire)
        for chunk in self._connection.pack_command(*args):
            self._out += chunk
        kind = _SUBSCRIBE.get(command) or _UNSUBSCRIBE.get(command) or command.lower()
        self._expected.append((kind, wire or ""))
        if command in _SUBSCRIBE and wire is not None:
            self._pending[wire] = self._pending.get(wire, 0) + 1
        self._more.set()

    async def serve_writes(self) -> None:
        """Send the outgoing buffer as the socket accepts it; a socket that
        accepts nothing for ``write_timeout`` is a broken link."""
        while True:
            await self._more.wait()
            self._more = trio.Event()
            while self._out:
                timeout = self._sock.gettimeout()
                self._sock.settimeout(0)
                try:
                    sent = self._sock.send(self._out)
                except BlockingIOError:
                    sent = 0
                finally:
                    self._sock.settimeout(timeout)
                del self._out[:sent]
                if self._out:
                    with trio.move_on_after(self.write_timeout) as scope:
                        await trio.lowlevel.wait_writable(self._sock)
                    if scope.cancelled_caught:
                        raise redis.exceptions.TimeoutError("pub/sub write timed out")

    # -- reading ----------------------------------------------------------------

    async def receive(self) -> list[Event]:
        """Wait for replies and return every complete one as events (maybe none,
        when only pongs came). Pings an idle node; silence is a broken link."""
        while True:
            events = self._drain()
            if events:
                return events
            with trio.move_on_after(PING_INTERVAL) as scope:
                await trio.lowlevel.wait_readable(self._sock)
            if scope.cancelled_caught:
                if trio.current_time() - self._heard > 3 * PING_INTERVAL:
                    raise redis.exceptions.ConnectionError("no answer to PING on pub/sub")
                self.send("PING")

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        connection = self._connection
        while connection.can_read(timeout=0):
            try:
                reply = connection.read_response(timeout=0, disconnect_on_error=False)
            except redis.exceptions.ResponseError as error:
                self._heard = trio.current_time()
                events.append(self._refused(error))
                continue
            except redis.exceptions.TimeoutError:
                break  # half a reply is buffered; wait for the rest
            self._heard = trio.current_time()
            event = self._classify(reply)
            if event is not None:
                events.append(event)
        return events

    def _refused(self, error: redis.exceptions.ResponseError) -> Event:
        if not self._expected:
            raise redis.exceptions.ConnectionError(f"unexpected error on pub/sub: {error}")
        kind, wire = self._expected.popleft()
        self._answered(kind, wire)
        return Refused(wire, error)

    def _classify(self, reply: object) -> Event | None:
        if isinstance(reply, str):  # PONG outside subscribed mode
            self._pop("ping", "")
            return None
        if not isinstance(reply, list) or len(reply) < 2:
            raise redis.exceptions.ConnectionError(f"unexpected pub/sub reply {reply!r}")
        kind = str(reply[0])
        wire = str(reply[1])
        if kind in ("smessage", "message"):
            return Message(wire, str(reply[2]))
        if kind == "pong":
            self._pop("ping", "")
            return None
        if kind in ("ssubscribe", "subscribe"):
            self._pop(kind, wire)
            return Subscribed(wire, settled=not self._pending.get(wire))
        if kind in ("sunsubscribe", "unsubscribe"):
            if self._pop(kind, wire):
                return None  # the answer to our own unsubscribe
            return Dropped(wire)
        return None

    def _pop(self, kind: str, wire: str) -> bool:
        if self._expected and self._expected[0] == (kind, wire):
            self._expected.popleft()
            self._answered(kind, wire)
            return True
        return False

    def _answered(self, kind: str, wire: str) -> None:
        if kind in ("ssubscribe", "subscribe"):
            left = self._pending.get(wire, 0) - 1
            if left > 0:
                self._pending[wire] = left
            else:
                self._pending.pop(wire, None)
