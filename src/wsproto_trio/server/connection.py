"""One websocket connection: a reader task and a writer task in one nursery.

Rules:
- the writer is the only task that sends data frames; everything for the client
  (broker traffic, replies, errors) goes through the connection's bounded queue;
- ``offer`` never blocks: a queue over ``SEND_QUEUE_SIZE`` messages or
  ``SEND_QUEUE_BYTES`` closes this connection with 1013 and drops what it held;
- with the ndjson subprotocol the writer sends everything already queued as one
  frame (never waiting to fill it), otherwise one envelope per frame;
- an error answers the offending client only; the connection stays open, except
  for the close codes of PROTOCOL.md section 5;
- with authentication on, the connection's claims come from the handshake; a
  timer task sends ``Expiring`` and closes with 4001 at ``exp``; a ``Refresh``
  is verified here (the only await of it) and applied by the session.

The ASGI websocket events are used directly (no Quart websocket object on the
hot path): ``receive``/``send`` are the server's callables.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..broker import Member
from ..config import Settings
from ..core import messages
from ..core.claims import Claims
from ..core.messages import ChatRecovery, Template
from ..core.session import (
    Join,
    Leave,
    Publish,
    RateLimiter,
    Reauthenticate,
    Reply,
    Session,
    Verdict,
)
from ..errors import (
    InvalidToken,
    KeysUnavailable,
    ProtocolError,
    RateLimited,
    TokenRejected,
    Unavailable,
    UnsupportedFrame,
)
from ..logs import connection_id_var
from ..metrics import out_channel
from .expiry import ExpiryTimer

if TYPE_CHECKING:
    from ..auth.verifier import Verifier
    from .hub import Hub  # the connection calls the hub; the hub knows it only as a Recipient

log = logging.getLogger("wsproto_trio.connection")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
CLOSE_TOKEN_EXPIRED = 4001
_MAX_BATCH_CHARS = 16 * 1024  # bounds the transient join per frame per connection
_PUBLISH_WINDOW = 64  # one connection's publications in flight before its reader waits


class Connection:
    # Slots: an idle connection costs a few hundred bytes less.
    __slots__ = (
        "_cancel",
        "_expiry",
        "_in_flight",
        "_nursery",
        "_out",
        "_send",
        "_window_open",
        "batched",
        "close_code",
        "hub",
        "id",
        "limiter",
        "queued",
        "queued_chars",
        "session",
        "settings",
        "verifier",
    )

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        *,
        batched: bool,
        claims: Claims | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        """``claims`` and ``verifier``: from the handshake, with authentication on."""
        self.id = str(uuid.uuid4())  # the connection's "user" id on the wire
        self.settings = settings
        self.hub = hub
        self.batched = batched
        self.session = Session(self.id, settings.server_id, settings.history_size, claims)
        self.verifier = verifier
        self._expiry: ExpiryTimer | None = None
        if claims is not None and verifier is not None:
            self._expiry = ExpiryTimer(
                verifier.settings.refresh_notice, self._expiring, self._expired
            )
            self._expiry.set(claims.exp)
        self.limiter = RateLimiter(settings.rate_limit, trio.current_time())
        # The bounded channel from every producer to the writer, opened with the
        # writer at the first offer: until then an idle connection holds neither
        # (a few KB each). ``queued`` and ``queued_chars`` count envelopes not yet
        # sent: in the channel, or taken by the writer and waiting for their turn.
        self._out: trio.MemorySendChannel[str] | None = None
        self._nursery: trio.Nursery | None = None  # where the writer runs, while ``run`` does
        self._send: Send | None = None
        self.queued = 0
        self.queued_chars = 0
        self.close_code: int | None = None
        self._cancel = trio.CancelScope()
        # Publications handed to the broker and not yet answered, and the event
        # the reader waits on when there are ``_PUBLISH_WINDOW`` of them.
        self._in_flight = 0
        self._window_open: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id}>"

    @property
    def rooms(self) -> set[str]:
        return self.session.rooms

    def forget(self, room: str) -> None:
        self.session.forget(room)

    def member(self, room: str) -> Member:
        """This connection's presence entry in ``room``, its announcements encoded here."""
        session = self.session
        return Member(
            room=room,
            user=self.id,
            joined=messages.joined_room(room, self.id, session.profile),
            left=messages.left_room(room, self.id, session.identity),
            record=messages.member_record(self.id, session.profile) if session.profile else "",
        )

    def offer(self, payload: str) -> None:
        """Queue ``payload`` for the writer without blocking; overflow closes 1013."""
        if self.close_code is not None:
            return
        out = self._out
        if out is None:
            out = self._start_writer()
            if out is None:
                return  # not running any more: nobody would send it
        size = len(payload)
        settings = self.settings
        if (
            self.queued >= settings.send_queue_size
            or self.queued_chars + size > settings.send_queue_bytes
        ):
            self._overflow()
            return
        try:
            out.send_nowait(payload)
        except trio.WouldBlock:
            self._overflow()
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The writer is gone: the connection is closing and its cleanup
            # will unregister it; the broker's reader must never see this.
            return
        self.queued += 1
        self.queued_chars += size

    def _start_writer(self) -> trio.MemorySendChannel[str] | None:
        """Open the queue and start the writer in the connection's nursery."""
        nursery, send = self._nursery, self._send
        if nursery is None or send is None:
            return None
        self._out, queue = trio.open_memory_channel[str](self.settings.send_queue_size)
        nursery.start_soon(self._write, send, queue)
        return self._out

    def _overflow(self) -> None:
        log.warning("slow consumer %s: queue full, closing with 1013", self.id)
        self.hub.metrics.slow_consumer_closes.inc()
        self.hub.metrics.dropped.inc()
        self.close(CLOSE_TRY_AGAIN)

    def close(self, code: int) -> None:
        """Stop this connection's tasks; the handler then closes the socket with ``code``."""
        if self.close_code is None:
            self.close_code = code
        self._cancel.cancel()

    def error(self, exc: ProtocolError) -> None:
        self.hub.metrics.errors.labels(exc.code).inc()
        self.offer(messages.error(exc.code, exc.detail))

    # -- tasks -------------------------------------------------------------------

    async def run(self, receive: Receive, send: Send, chat: ChatRecovery | None = None) -> None:
        """Serve an accepted websocket until the client leaves or we close it.

        The close frame goes out before the hub forgets the connection: leaving
        rooms talks to the broker, and a frozen Redis must not hold a 1001 (or
        1013, 1009...) back for the broker's timeout. The hub forgets it even if
        the writer is stuck in a send to a client that does not read (Hypercorn
        shields socket writes), so the close is bounded by a second.
        """
        # Every log line of this connection's tasks names it (they copy the context).
        connection_id_var.set(self.id)
        client_gone = False
        with self._cancel:
            async with trio.open_nursery() as nursery:
                self._nursery, self._send = nursery, send
                if self._expiry is not None:
                    nursery.start_soon(self._expiry.serve)
                try:
                    async with self.hub.connected(self, recovering_chat=chat is not None):
                        try:
                            if chat is not None:
                                await self._recover_chat(chat)
                            client_gone = await self._read(receive)
                        finally:
                            if not client_gone and self.close_code is not None:
                                await self._send_close(send, self.close_code)
                finally:
                    self._nursery = self._send = None
                    nursery.cancel_scope.cancel()

    async def _recover_chat(self, chat: ChatRecovery) -> None:
        """The chat's ``Position`` and replay; without the broker, close with 1013.

        The first chat envelope such a client gets must be ``Position``: going on
        without it would hand it live chat it cannot place. 1013 (try again
        later) makes it reconnect, with the same URL, once the broker is back."""
        try:
            await self.hub.recover_chat(self, chat.since, chat.history)
        except ProtocolError as exc:
            log.info("chat position for %s unavailable (%s); closing 1013", self.id, exc.detail)
            self.error(exc)
            self.close(CLOSE_TRY_AGAIN)

    @staticmethod
    async def _send_close(send: Send, code: int) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 1.0
            event: dict[str, Any] = {"type": "websocket.close", "code": code}
            if code == CLOSE_TOKEN_EXPIRED:
                event["reason"] = "token expired"
            await send(event)

    async def _write(self, send: Send, queue: trio.MemoryReceiveChannel[str]) -> None:
        """Send what is queued, in order; the only task that sends data frames.

        After each wake-up the writer takes everything already in the channel
        (``receive_nowait``), so a busy connection pays one scheduler round trip
        per burst rather than one per envelope.
        """
        # Started by whichever task offered first (the hub's, often): name ours.
        connection_id_var.set(self.id)
        async with queue:
            while True:
                batch = [await queue.receive()]
                while True:
                    try:
                        batch.append(queue.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self.batched:
                    await self._send_batched(send, batch)
                    continue
                for text in batch:
                    if self.close_code is not None:
                        return  # closing: the close frame is next, no data frame after it
                    self.queued -= 1
                    self.queued_chars -= len(text)
                    await send({"type": "websocket.send", "text": text})

    async def _send_batched(self, send: Send, batch: list[str]) -> None:
        """Everything taken from the queue as few ndjson frames, each up to ~16 KiB.

        Every connection joins its own frame, so the bound is what a burst to
        many readers that fell behind costs the server at once."""
        count = len(batch)
        start = 0
        while start < count:
            text = batch[start]
            size = len(text)
            end = start + 1
            while end < count and size < _MAX_BATCH_CHARS:
                size += len(batch[end])
                end += 1
            if end - start > 1:
                text = "\n".join(batch[start:end])
            if self.close_code is not None:
                return
            self.queued -= end - start
            self.queued_chars -= size
            start = end
            await send({"type": "websocket.send", "text": text})

    async def _read(self, receive: Receive) -> bool:
        """Handle inbound frames; True when the client went away by itself."""
        limit = self.settings.max_message_bytes
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.disconnect":
                return True
            if kind != "websocket.receive":
                continue
            text = event.get("text")
            if text is None:
                data = event.get("bytes") or b""
                if len(data) > limit:
                    self.close(CLOSE_TOO_BIG)
                    return False
                self.error(UnsupportedFrame("binary frames are not supported; send JSON text"))
                continue
            if len(text) > limit // 4 and len(text.encode("utf-8", "surrogatepass")) > limit:
                log.info("client %s sent a frame over %d bytes; closing 1009", self.id, limit)
                self.close(CLOSE_TOO_BIG)
                return False
            for part in messages.split_frame(text, self.batched):
                await self._handle(part)

    async def _handle(self, text: str) -> None:
        verdict = self.limiter.check(trio.current_time())
        if verdict is not Verdict.ALLOW:
            if verdict is Verdict.ABUSIVE:
                log.warning("client %s keeps exceeding the rate limit; closing 1008", self.id)
                self.close(CLOSE_POLICY)
                await trio.lowlevel.checkpoint()
                return
            self.error(RateLimited("rate limit exceeded; message dropped"))
            return
        try:
            inbound = messages.decode(text)
            log.info("message from %s: %.300r", self.id, inbound)
            action = self.session.handle(inbound)
            match action:
                case Publish(channel, message):
                    self.hub.metrics.messages_in.labels(out_channel(channel)).inc()
                    await self._publish(channel, message)
                case Join(room, since, history):
                    self.hub.metrics.messages_in.labels("chat-room").inc()
                    await self.hub.join(self, room, since, history)
                case Leave(room):
                    self.hub.metrics.messages_in.labels("chat-room").inc()
                    await self._settle()
                    await self.hub.leave(self, room)
                case Reply(payload):
                    self.hub.metrics.messages_in.labels("session").inc()
                    self.offer(payload)
                case Reauthenticate(token):
                    self.hub.metrics.messages_in.labels("session").inc()
                    await self._refresh(token)
        except ProtocolError as exc:
            self.error(exc)

    async def _publish(self, channel: str, message: Template) -> None:
        """Hand ``message`` to the broker without waiting for its round trip.

        The reader goes on with the next inbound message while this one is in
        flight, so a burst from one client reaches the broker as one pipeline
        (and its recipients as one wake-up) instead of one round trip each. The
        broker keeps them in order (one command stream, FIFO); an ``unavailable``
        still reaches the sender for each refused one, when its answer comes.
        """
        while self._in_flight >= _PUBLISH_WINDOW:
            self._window_open = event = trio.Event()
            await event.wait()
        self._in_flight += 1
        try:
            await self.hub.submit_message(channel, message, self._published)
        except BaseException:
            self._in_flight -= 1
            raise

    async def _settle(self) -> None:
        """Wait until every publication in flight has its answer.

        A leave waits for it, so that what the client sent before ``LeaveRoom``
        is published (and its echo on its way) before the ``LeftRoom`` ack is
        queued, as when publications were awaited one at a time.
        """
        while self._in_flight:
            self._window_open = event = trio.Event()
            await event.wait()

    def _published(self, error: Unavailable | None) -> None:
        """The broker's answer to one of ``_publish``'s messages (on the trio thread)."""
        self._in_flight -= 1
        event, self._window_open = self._window_open, None
        if event is not None:
            event.set()
        if error is not None:
            self.error(error)

    # -- authentication ----------------------------------------------------------

    async def _refresh(self, token: str) -> None:
        """Replace the claims with a verified token's (same subject), or change nothing."""
        if self.verifier is None:
            raise InvalidToken("authentication is off on this server")
        try:
            claims = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise InvalidToken(exc.reason) from None
        except KeysUnavailable as exc:
            raise InvalidToken(str(exc)) from None
        for room in self.session.refresh(claims):
            log.info("client %s left %r: its refreshed token does not allow it", self.id, room)
            await self.hub.leave(self, room)
        self.offer(self.session.welcome())
        if self._expiry is not None:
            self._expiry.set(claims.exp)

    def _expiring(self, exp: float) -> None:
        self.offer(messages.expiring(exp))

    def _expired(self) -> None:
        log.info("client %s: token expired; closing with 4001", self.id)
        self.close(CLOSE_TOKEN_EXPIRED)
