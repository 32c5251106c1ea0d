"""Shared helpers for the example clients in this directory (a library, not a script).

The examples have no package: each script puts its own directory first on ``sys.path``
and then does ``from _client import ...``. That works for ``python examples/chat.py``
run from any directory, for ``runpy.run_path("examples/demo.py")`` and for
``importlib.util.spec_from_file_location(...)``, because all of them set ``__file__``.
A test may equally put ``examples/`` on ``sys.path`` itself and ``import demo``.

    async with open_client("ws://127.0.0.1:9000/websockets") as client:
        user, server = await client.hello()
        await client.send("chat", "SubmitMessage", "hi")
        env = await client.expect(lambda e: kind(e) == ("chat", "NewMessageReceived"), 5)

Only trio and trio-websocket are used; ``http_get`` runs urllib in a worker thread.
"""

import json
import signal
import urllib.error
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

NDJSON = "wsproto-trio.ndjson"
"""Subprotocol that lets one text frame carry several envelopes separated by ``\\n``."""

Envelope = dict[str, Any]
Predicate = Callable[[Envelope], bool]


class ExpectTimeout(trio.TooSlowError):
    """``Client.expect`` saw no matching envelope before its deadline."""


class ServerError(Exception):
    """The server answered with an ``error`` envelope while we waited for something else."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def envelope(channel: str, type_: str, contents: Any = None) -> Envelope:
    """Build an envelope; ``contents`` is left out when it is None (as in ``Hello``)."""
    message: dict[str, Any] = {"type": type_}
    if contents is not None:
        message["contents"] = contents
    return {"channel": channel, "message": message}


def kind(env: Envelope) -> tuple[str, str]:
    """``(channel, type)`` of an envelope, as strings (``"None"`` where missing)."""
    message = env.get("message")
    type_ = message.get("type") if isinstance(message, dict) else None
    return str(env.get("channel")), str(type_)


def contents(env: Envelope) -> Any:
    message = env.get("message")
    return message.get("contents") if isinstance(message, dict) else None


def field(env: Envelope, name: str) -> Any:
    """``contents[name]`` when contents is an object, else None."""
    body = contents(env)
    return body.get(name) if isinstance(body, dict) else None


def in_room(env: Envelope, room: str) -> bool:
    return kind(env)[0] == "chat-room" and field(env, "room") == room


def parse_frame(frame: str | bytes, batched: bool) -> list[Envelope]:
    """Split a text frame into envelopes (on ``\\n`` only if the subprotocol was accepted)."""
    if isinstance(frame, bytes):
        raise ValueError("server sent a binary frame")
    pieces = frame.split("\n") if batched else [frame]
    result: list[Envelope] = []
    for piece in pieces:
        if not piece.strip():
            continue
        value = json.loads(piece)
        if not isinstance(value, dict):
            raise ValueError(f"server sent a non-object frame: {piece[:100]!r}")
        result.append(value)
    return result


class Client:
    """One websocket connection; hands out envelopes one at a time."""

    def __init__(self, ws: WebSocketConnection, name: str = "client") -> None:
        self.ws = ws
        self.name = name
        self.batched = ws.subprotocol == NDJSON
        self.user: str | None = None
        self.server: str | None = None
        self.waiting_for: str | None = None  # what expect() is waiting for, for diagnostics
        self.skipped: deque[Envelope] = deque(maxlen=100)  # recent envelopes expect() passed over
        self._pending: deque[Envelope] = deque()

    async def send(self, channel: str, type_: str, contents: Any = None) -> None:
        await self.send_many([envelope(channel, type_, contents)])

    async def send_many(self, envelopes: Iterable[Envelope]) -> None:
        """Send envelopes in order: in one frame if batching was accepted, else one per frame."""
        frames = [json.dumps(env, separators=(",", ":")) for env in envelopes]
        if self.batched and frames:
            frames = ["\n".join(frames)]
        for frame in frames:
            await self.ws.send_message(frame)

    async def receive(self) -> Envelope:
        """Next envelope, with no deadline of its own (wrap it in ``trio.fail_after``).
        Cancel-safe: a cancelled call loses nothing."""
        while not self._pending:
            self._pending.extend(parse_frame(await self.ws.get_message(), self.batched))
        return self._pending.popleft()

    async def poll(self, within: float) -> Envelope | None:
        """Next envelope if one arrives within ``within`` seconds, else None."""
        with trio.move_on_after(within):
            return await self.receive()
        return None

    async def expect(
        self,
        predicate: Predicate,
        timeout: float,  # noqa: ASYNC109 - the timeout is the API: it is named in ExpectTimeout
        what: str = "matching envelope",
        *,
        errors: bool = True,
    ) -> Envelope:
        """Receive until an envelope matches and return it; the others are dropped
        (the last 100 are kept in ``skipped``). With ``errors`` an ``error`` envelope
        raises ``ServerError`` at once. Raises ``ExpectTimeout`` after ``timeout`` s."""
        self.waiting_for = what
        try:
            with trio.fail_after(timeout):
                while True:
                    env = await self.receive()
                    if predicate(env):
                        break
                    if errors and kind(env) == ("error", "Error"):
                        raise ServerError(str(field(env, "code")), str(field(env, "detail")))
                    self.skipped.append(env)
        except trio.TooSlowError:
            raise ExpectTimeout(f"{self.name}: no {what} within {timeout:g} s") from None
        self.waiting_for = None
        return env

    async def hello(self, timeout: float = 5.0) -> tuple[str, str]:  # noqa: ASYNC109 - see expect
        """Send ``session``/``Hello`` and return ``(user id, server id)`` from ``Welcome``."""
        await self.send("session", "Hello")
        env = await self.expect(lambda e: kind(e) == ("session", "Welcome"), timeout, "Welcome")
        user, server = field(env, "user"), field(env, "server")
        if not isinstance(user, str) or not user:
            raise ValueError(f"Welcome without a user id: {env}")
        self.user, self.server = user, str(server)
        return self.user, self.server


@asynccontextmanager
async def open_client(
    url: str, *, name: str = "client", batched: bool = True, connect_timeout: float = 5.0
) -> AsyncIterator[Client]:
    """Connect to ``url`` (offering the ndjson subprotocol unless ``batched=False``)."""
    async with open_websocket_url(
        url,
        subprotocols=[NDJSON] if batched else None,
        connect_timeout=connect_timeout,
        disconnect_timeout=2.0,
    ) as ws:
        yield Client(ws, name)


async def cancel_on_sigint(scope: trio.CancelScope) -> None:
    """Cancel ``scope`` on the first SIGINT (Ctrl-C), so the script can wind down cleanly.
    Start it in a nursery inside ``scope``; only works in the main thread."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


def http_base(ws_url: str) -> str:
    """``ws://h:p/websockets`` -> ``http://h:p`` (``wss`` -> ``https``)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def http_get(
    base_url: str,
    path: str,
    timeout: float = 5.0,  # noqa: ASYNC109 - also urllib's socket timeout: the thread can't be cancelled
) -> tuple[int, str]:
    """GET ``base_url + path``; returns ``(status, body)`` for any status, raises
    ``OSError`` if the server can't be reached and ``trio.TooSlowError`` after ``timeout`` s.
    Environment proxies are ignored: the examples talk to servers they can reach directly."""
    url = base_url.rstrip("/") + path
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def fetch() -> tuple[int, str]:
        try:
            with opener.open(url, timeout=timeout) as response:
                return int(response.status), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(fetch, abandon_on_cancel=True)


def closed_text(exc: ConnectionClosed) -> str:
    """``[closed 1001] reason`` for a connection the server closed."""
    reason = exc.reason
    if reason is None:
        return "[closed]"
    return f"[closed {reason.code}] {reason.reason or reason.name}"


def say(line: str) -> None:
    """Default output of the scripts: print and flush, so piped output is not held back."""
    print(line, flush=True)


def describe(exc: BaseException) -> str:
    """Readable one-liner for a connection failure (trio-websocket hides the OSError)."""
    if isinstance(exc, ConnectionRejected):
        return f"the server refused the websocket upgrade with HTTP {exc.status_code}"
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    return f"{text}: {cause}" if cause is not None and str(cause) else text


def _clock(timestamp: Any) -> str:
    try:
        return datetime.fromisoformat(str(timestamp)).strftime("%H:%M:%S")
    except ValueError:
        return str(timestamp)


def format_envelope(env: Envelope) -> str:
    """One readable line per envelope, e.g. ``[chat 12:00:01] hello`` (times in UTC)."""
    channel, type_ = kind(env)
    room = field(env, "room")
    user = field(env, "user")
    match channel, type_:
        case "chat", "NewMessageReceived":
            return f"[chat {_clock(field(env, 'postedAt'))}] {field(env, 'content')}"
        case "ping", "Ping":
            return f"[ping] {contents(env)}"
        case "error", "Error":
            return f"[error {field(env, 'code')}] {field(env, 'detail')}"
        case "session", "Welcome":
            return f"[session] you are {user} on server {field(env, 'server')}"
        case "chat-room", "MemberList":
            users = field(env, "users")
            names = ", ".join(map(str, users)) if isinstance(users, list) else str(users)
            return f"[room {room}] members: {names}"
        case "chat-room", "JoinedRoom":
            return f"[room {room}] {user} joined"
        case "chat-room", "LeftRoom":
            return f"[room {room}] {user} left"
        case "chat-room", "NewMessage":
            return f"[room {room}] <{user}> {field(env, 'message')}"
    return f"[{channel} {type_}] {json.dumps(contents(env))}"
