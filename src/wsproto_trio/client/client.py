"""The client's I/O: trio-websocket connections, reconnects, and the event stream.

``open_client`` owns a nursery with one task (the connection loop). Each
connection runs four tasks in a nursery of its own: the reader (the only
caller of ``get_message``; it feeds ``ClientState`` and queues its events), the
requester (sends what the state asks for: joins, retries, leaves), the
keep-alive (a websocket ping every ``ping_interval``; no pong in ``timeout``
drops the connection) and the refresher (a new token on ``Expiring``). Every
wait has a deadline. All the rules live in ``state.py``; this module only moves
bytes and time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Self

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
)

from ..core.backoff import Backoff
from .errors import (
    ClientError,
    ClientTimeout,
    Closed,
    ConnectFailed,
    ConnectionLost,
    JoinFailed,
    Rejected,
)
from .events import Connected, Event, MemberList, Position
from .state import ClientState, Stats
from .transport import open_connection, raise_body_error
from .wire import (
    NDJSON,
    BadFrame,
    Envelope,
    encode_frames,
    envelope,
    parse_frame,
    redact,
    with_query,
)

log = logging.getLogger("wsproto_trio.client")

TokenSource = str | Callable[[], Awaitable[str]] | None
"""A token, or an async callable returning a fresh one (called before every
connection and on ``Expiring``), or None (no authentication)."""

FATAL_STATUSES = frozenset({400, 401, 403, 404})
FATAL_CLOSE_CODES = frozenset({1008})  # the server asked us not to come back
GOING_AWAY = 1001
DISCONNECT_TIMEOUT = 2.0
MAX_UNAUTHORIZED = 3  # 401s in a row with a token callable before giving up


def _describe(exc: BaseException) -> str:
    """Readable one-liner for a failed connect (trio-websocket hides the OSError)."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    return f"{text}: {cause}" if cause is not None and str(cause) else text


def _rejection_text(exc: ConnectionRejected) -> str:
    body = (exc.body or b"").decode("utf-8", "replace")
    try:
        value = json.loads(body)
    except ValueError:
        return body[:200]
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, str):
        return error
    return body[:200]


class Client:
    """One logical connection to a cluster: use ``open_client`` to get one."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        token: TokenSource = None,
        batched: bool = True,
        recover: bool = True,
        chat_history: int | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ping_interval: float = 15.0,
        give_up_after: float | None = None,
        max_buffer: int = 10_000,
        backoff: Backoff | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one URL is needed")
        self._urls = list(urls)
        self._token = token
        self._batched = batched
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._give_up_after = give_up_after
        self._backoff = backoff or Backoff(base=0.1, cap=5.0)
        self._state = ClientState(
            recover=recover, chat_history=chat_history, request_timeout=timeout
        )
        self._events_in, self._events_out = trio.open_memory_channel[Event](max_buffer)
        self._changed = trio.Event()
        self._send_lock = trio.Lock()
        self._ws: WebSocketConnection | None = None
        self._ws_batched = False
        self._index = 0
        self._failure: ClientError | None = None
        self._closing = False
        self._ever_connected = False
        self._finished = False
        self._abort_reason = ""

    # -- what the application reads -------------------------------------------------

    @property
    def user(self) -> str | None:
        """This connection's user id (a new one after every reconnect)."""
        return self._state.user

    @property
    def server(self) -> str | None:
        return self._state.server

    @property
    def sub(self) -> str | None:
        """The token's subject, as the server's ``Welcome`` gave it (authentication on)."""
        return self._state.sub

    @property
    def exp(self) -> float | None:
        """When the connection's token expires (the latest ``Welcome``, also after a refresh)."""
        return self._state.exp

    @property
    def url(self) -> str:
        """The URL of the current (or last) connection, without its query."""
        return self._state.url

    @property
    def connected(self) -> bool:
        return self._state.welcomed

    @property
    def batched(self) -> bool:
        """Whether the current connection accepted the ndjson subprotocol."""
        return self._ws_batched

    @property
    def stats(self) -> Stats:
        return self._state.stats

    def rooms(self) -> frozenset[str]:
        """The rooms joined (or being joined again after a reconnect)."""
        return frozenset(self._state.rooms)

    def members(self, room: str) -> frozenset[str]:
        """The room's members as this client knows them (empty for a room not joined)."""
        return self._state.members(room)

    def position(self, room: str | None = None) -> Position | None:
        """The last position delivered in the chat (``room`` None) or a room."""
        return self._state.position(room)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._events_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._failure is not None:
                raise self._failure from None
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        """The next event (no deadline of its own: wrap it in ``trio.fail_after``)."""
        try:
            return await self._events_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._failure or Closed(None, "the client is closed") from None

    def receive_nowait(self) -> Event:
        """An event already received; raises ``trio.WouldBlock`` when there is none."""
        try:
            return self._events_out.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._failure or Closed(None, "the client is closed") from None

    # -- what the application does --------------------------------------------------

    async def join(
        self,
        room: str,
        *,
        history: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> MemberList:
        """Join ``room`` (and again after every reconnect, recovering what was missed).

        ``history``: also get the room's latest messages (at this join, and when a
        later recovery fails). Returns the ``MemberList``, which the event stream
        carries too. Raises ``JoinFailed`` when the server refuses the room; on
        ``ClientTimeout`` the client keeps trying (``leave`` to give up)."""
        self._check_usable()
        self._state.join(room, history)
        self._notify()
        state = self._state

        def settled() -> bool:
            joined = state.rooms.get(room)
            return joined is None or (joined.member_list is not None and state.can_send(room))

        await self._wait_for(settled, timeout, f"MemberList of room {room!r}")
        joined = state.rooms.get(room)
        if joined is None or joined.member_list is None:
            error = state.failures.pop(room, None)
            if error is not None:
                raise JoinFailed(room, error.code, error.detail)
            raise ClientError(f"room {room!r} was left before it was joined")
        return joined.member_list

    async def leave(self, room: str, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Leave ``room`` and wait for the server's acknowledgement."""
        self._check_usable()
        self._state.leave(room)
        self._notify()
        try:
            await self._wait_for(lambda: room not in self._state.rooms, timeout, "LeftRoom")
        except ClientTimeout:
            self._state.forget(room)
            raise

    async def send(
        self,
        room: str,
        text: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline is part of the API
    ) -> None:
        """Send ``text`` to a joined room (waiting for a reconnect if need be).

        The message is delivered to every member, this client included: the echo
        (a ``RoomMessage`` with this client's user id) is the proof it was taken.
        Raises ``ConnectionLost`` if the connection dropped during the send."""
        if not isinstance(text, str) or not text:
            raise ValueError("a message is a non-empty string")
        if room not in self._state.rooms:
            raise ValueError(f"room {room!r} is not joined")
        state = self._state
        await self._wait_for(
            lambda: state.can_send(room) or room not in state.rooms,
            timeout,
            f"a connection in room {room!r}",
        )
        if room not in state.rooms:
            raise ValueError(f"room {room!r} was left")
        await self._send_request(
            [envelope("chat-room", "SendMessage", {"room": room, "message": text})]
        )

    async def chat(self, text: str, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Say ``text`` in the chat (every client of every server, this one included)."""
        if not isinstance(text, str) or not text:
            raise ValueError("a message is a non-empty string")
        await self._wait_for(lambda: self._state.welcomed, timeout, "a connection")
        await self._send_request([envelope("chat", "SubmitMessage", text)])

    async def aclose(self) -> None:
        """Close the connection (code 1000); the event stream ends."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(DISCONNECT_TIMEOUT):
                await ws.aclose()
        self._notify()

    # -- internals: waiting ----------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing or self._finished:
            raise Closed(None, "the client is closed")

    async def _wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float | None,  # noqa: ASYNC109 - named in the ClientTimeout it raises
        what: str,
    ) -> None:
        seconds = self._timeout if timeout is None else timeout
        with trio.move_on_after(seconds) as scope:
            while not predicate():
                self._check_usable()
                await self._changed.wait()
        if scope.cancelled_caught:
            raise ClientTimeout(f"no {what} within {seconds:g} s")

    async def _emit(self, event: Event) -> None:
        try:
            await self._events_in.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # nobody reads any more: the client is closing

    async def _send_request(self, envelopes: list[Envelope]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        try:
            await self._send(ws, envelopes)
        except ConnectionClosed as exc:
            raise ConnectionLost(f"the connection closed: {exc.reason}") from None

    async def _send(self, ws: WebSocketConnection, envelopes: list[Envelope]) -> None:
        """One batch, atomically: nothing else is sent between its envelopes."""
        async with self._send_lock:
            for frame in encode_frames(envelopes, self._ws_batched):
                await ws.send_message(frame)

    # -- internals: the connection loop ------------------------------------------------

    async def _first_connection(self) -> None:
        """Wait until the first connection said Welcome, or raise why it could not."""
        limit = self._connect_timeout + 2 * self._timeout  # the loop's own deadline comes first
        with trio.move_on_after(limit):
            while not self._ever_connected and self._failure is None and not self._finished:
                await self._changed.wait()
        if not self._ever_connected:
            raise self._failure or ConnectFailed(f"no connection within {limit:g} s")

    async def run(self) -> None:
        """Connect, serve, reconnect, until closed or a fatal error (kept for the reader)."""
        try:
            await self._connect_loop()
        except ClientError as exc:
            log.warning("client stopped: %s", exc)
            self._failure = exc
        finally:
            self._finished = True
            self._events_in.close()
            self._notify()

    async def _token_now(self) -> str | None:
        """The token for the next connection or ``Refresh``; the callable is asked anew.

        Raises ``ClientError`` when the callable fails, hangs or returns no token."""
        token = self._token
        if token is None or isinstance(token, str):
            return token
        try:
            with trio.fail_after(self._timeout):
                value = await token()
        except trio.TooSlowError:
            raise ClientError(f"the token callable did not answer in {self._timeout:g} s") from None
        except Exception as exc:  # the application's callable: its failure is retried
            raise ClientError(f"the token callable raised {type(exc).__name__}") from exc
        if not isinstance(value, str) or not value:
            raise ClientError("the token callable returned no token")
        return value

    async def _connect_loop(self) -> None:
        started = trio.current_time()
        down_since: float | None = None
        unauthorized = 0
        last_problem = ""
        while not self._closing:
            url = self._urls[self._index]
            try:
                token = await self._token_now()
                last_problem = ""
            except ClientError as exc:
                last_problem = str(exc)
                token = None
            same_url = False
            connections = self._state.stats.connections
            if not last_problem:
                try:
                    code, reason = await self._connect_once(url, token)
                except ConnectionRejected as exc:
                    text = _rejection_text(exc)
                    status = exc.status_code
                    callable_token = callable(self._token)
                    unauthorized = unauthorized + 1 if status == 401 else 0
                    if status in FATAL_STATUSES and not (
                        status == 401 and callable_token and unauthorized < MAX_UNAUTHORIZED
                    ):
                        raise Rejected(url, status, text) from None
                    last_problem = f"HTTP {status}: {text}"
                except HandshakeError as exc:
                    last_problem = _describe(exc)
                else:
                    unauthorized = 0
                    if self._closing:
                        return
                    if code in FATAL_CLOSE_CODES:
                        raise Closed(code, reason)
                    if down_since is None or self._state.stats.connections > connections:
                        down_since = trio.current_time()
                    last_problem = f"closed {code}: {reason}"
                    same_url = code != GOING_AWAY
            now = trio.current_time()
            if last_problem:
                log.info("connection to %s: %s", url, last_problem)
            if not self._ever_connected and now - started > self._connect_timeout:
                raise ConnectFailed(f"cannot connect to {', '.join(self._urls)}: {last_problem}")
            if (
                self._give_up_after is not None
                and down_since is not None
                and now - down_since > self._give_up_after
            ):
                raise Closed(None, f"gave up reconnecting after {self._give_up_after:g} s")
            if not same_url:
                self._index = (self._index + 1) % len(self._urls)
            await trio.sleep(self._backoff.next_delay())

    async def _connect_once(self, url: str, token: str | None) -> tuple[int | None, str]:
        """One connection, from handshake to close; returns the close code and reason."""
        target = with_query(url, self._state.query())
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
        async with open_connection(
            target,
            subprotocols=[NDJSON] if self._batched else None,
            headers=headers,
            connect_timeout=self._timeout,
            disconnect_timeout=DISCONNECT_TIMEOUT,
        ) as ws:
            return await self._serve(ws, url)

    async def _serve(self, ws: WebSocketConnection, url: str) -> tuple[int | None, str]:
        self._ws = ws
        self._ws_batched = ws.subprotocol == NDJSON
        self._abort_reason = ""
        self._state.opened(url, trio.current_time())
        log.info("connected to %s", redact(url))
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                scope = nursery.cancel_scope
                nursery.start_soon(self._read_loop, ws, scope)
                nursery.start_soon(self._request_loop, ws, scope)
                nursery.start_soon(self._keepalive, ws, scope)
                nursery.start_soon(self._refresh_loop, ws, scope)
        finally:
            self._ws = None
        closed = ws.closed
        code = closed.code if closed is not None else None
        reason = (closed.reason or closed.name) if closed is not None else self._abort_reason
        for event in self._state.closed(code, reason, trio.current_time()):
            await self._emit(event)
        self._notify()
        return code, reason

    async def _read_loop(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        state = self._state
        try:
            while True:
                frame = await ws.get_message()
                try:
                    envelopes = parse_frame(frame, self._ws_batched)
                except BadFrame as exc:
                    log.warning("ignoring a frame from the server: %s", exc)
                    continue
                for env in envelopes:
                    events = state.receive(env, trio.current_time())
                    self._notify()
                    for event in events:
                        if isinstance(event, Connected):
                            self._ever_connected = True
                            self._backoff.reset()
                        await self._emit(event)
                    if state.drop_reason is not None:
                        self._abort_reason = state.drop_reason
                        scope.cancel()
                        return
        except ConnectionClosed:
            pass
        scope.cancel()

    async def _request_loop(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        state = self._state
        try:
            while True:
                changed = self._changed
                now = trio.current_time()
                events, abort = state.tick(now)
                for event in events:
                    await self._emit(event)
                if abort:
                    self._abort_reason = f"no answer from the server within {self._timeout:g} s"
                    break
                envelopes = state.take_requests(now)
                if envelopes:
                    await self._send(ws, envelopes)
                    self._notify()
                    continue
                deadline = state.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await changed.wait()
        except ConnectionClosed:
            pass
        scope.cancel()

    async def _keepalive(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        try:
            while True:
                await trio.sleep(self._ping_interval)
                with trio.move_on_after(self._timeout) as ping:
                    await ws.ping()
                if ping.cancelled_caught:
                    self._abort_reason = f"no pong within {self._timeout:g} s"
                    break
        except ConnectionClosed:
            pass
        scope.cancel()

    async def _refresh_loop(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        state = self._state
        try:
            while True:
                while not state.refresh_wanted:
                    await self._changed.wait()
                if not callable(self._token):
                    state.refresh_wanted = False  # nothing to refresh with: 4001 will come
                    continue
                try:
                    token = await self._token_now()
                except ClientError as exc:
                    token = None
                    log.warning("token not refreshed: %s", exc)
                if token is None:
                    state.refresh_wanted = False
                    continue
                await self._send(ws, state.take_refresh(token, trio.current_time()))
                self._notify()
        except ConnectionClosed:
            pass
        scope.cancel()


@asynccontextmanager
async def open_client(
    urls: str | Sequence[str],
    *,
    token: TokenSource = None,
    batched: bool = True,
    recover: bool = True,
    chat_history: int | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - bounds every wait of the client, not this call
    connect_timeout: float = 10.0,
    ping_interval: float = 15.0,
    give_up_after: float | None = None,
    max_buffer: int = 10_000,
    backoff: Backoff | None = None,
) -> AsyncIterator[Client]:
    """Connect to one of ``urls`` and yield the client once the server said Welcome.

    The client reconnects by itself after a drop (to the same URL first, to the
    next one after a failed attempt or a 1001), with exponential backoff and
    jitter, and recovers the chat and every joined room. ``recover=False`` only
    rejoins (what was said meanwhile is lost). ``timeout`` bounds every wait of
    the client (a join, a leave, a send while reconnecting, a pong).

    Raises ``ConnectFailed`` (nothing reachable within ``connect_timeout``),
    ``Rejected`` (a handshake refused for good, e.g. HTTP 401).

    Iterate the client for its events; while nobody reads them the client
    stops reading the socket after ``max_buffer`` events, and the server will
    eventually drop it as a slow consumer (it then reconnects and recovers).
    """
    client = Client(
        [urls] if isinstance(urls, str) else urls,
        token=token,
        batched=batched,
        recover=recover,
        chat_history=chat_history,
        timeout=timeout,
        connect_timeout=connect_timeout,
        ping_interval=ping_interval,
        give_up_after=give_up_after,
        max_buffer=max_buffer,
        backoff=backoff,
    )
    failure: BaseException | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            try:
                await client._first_connection()
            except ClientError as exc:
                failure = exc
                nursery.cancel_scope.cancel()
            if failure is None:
                try:
                    yield client
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    with trio.CancelScope(shield=True):
                        await client.aclose()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_body_error(group, body_error)
        raise
    if failure is not None:
        raise failure
