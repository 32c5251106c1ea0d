#!/usr/bin/env python3
"""Replay the original prototype's demo across two servers and check every step.

Usage:
    python examples/demo.py ws://127.0.0.1:9000/websockets ws://127.0.0.1:9001/websockets
                            [--http1 http://127.0.0.1:9000] [--http2 http://127.0.0.1:9001]
                            [--token JWT] [--step-timeout SECONDS]

Starts nothing: both servers must be running, and share one Redis for the cross-server
steps to pass. The HTTP base of each server (for ``/ping1``, ``/ping2``) is derived from
its websocket URL (``ws://h:p/websockets`` -> ``http://h:p``) unless given. Client A
talks to server 1, client B to server 2:

 1. A and B connect (the client library says Hello); each learns its user id from Welcome
 2. GET /ping1 on server 1, GET /ping2 on server 2: A and B both get Ping 1 and Ping 2
 3. A chats: A and B both get NewMessageReceived with that content, postedAt ending in Z
 4. A joins room demo-<random>: A gets MemberList [A], then JoinedRoom A
 5. A sends to the room: A gets NewMessage; B gets nothing from chat-room (0.5 s window)
 6. B joins: B gets MemberList {A, B}, then JoinedRoom B; A gets JoinedRoom B
 7. B sends to the room: A and B both get NewMessage from B
 8. A leaves: A gets LeftRoom A (its ack), B gets LeftRoom A
 9. B sends again: B gets NewMessage; A gets nothing from chat-room (0.5 s window)

Each step prints PASS or FAIL with what was seen, and must finish within the step
timeout (default 5 s). A failed step does not stop the later ones, except that nothing
runs once step 1 has failed. Ends with ``demo: N passed, M failed``; exit status 0 only
if every step passed.

From a test: ``ok = await run_demo(url1, url2)`` (``out=`` to collect the lines).
"""

import argparse
import functools
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import trio

from wsproto_trio.client import (
    ChatMessage,
    Client,
    ClientError,
    Error,
    Event,
    Joined,
    Left,
    MemberList,
    Other,
    Ping,
    RoomMessage,
    open_client,
)
from wsproto_trio.client.text import format_event

E = TypeVar("E", bound=Event)
QUIET_WINDOW = 0.5  # seconds a non-member listens for room traffic that must not come


def say(line: str) -> None:
    print(line, flush=True)


class StepFailed(Exception):
    """A step saw something other than what the protocol promises."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


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
    """GET ``base_url + path`` in a worker thread; ``(status, body)`` for any status.
    Environment proxies are ignored: the demo talks to servers it reaches directly."""
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


def room_of(event: Event) -> str | None:
    """The room an event is about (``Other`` envelopes of chat-room included)."""
    match event:
        case RoomMessage() | Joined() | Left() | MemberList():
            return event.room
        case Other(channel="chat-room", contents=dict() as body):
            room = body.get("room")
            return room if isinstance(room, str) else None
    return None


@dataclass
class Demo:
    """The two connected clients and what the steps share."""

    a: Client
    b: Client
    http1: str
    http2: str
    timeout: float
    token: str
    waiting: dict[str, str]

    @property
    def room(self) -> str:
        return f"demo-{self.token}"

    def name(self, client: Client) -> str:
        return "A" if client is self.a else "B"

    def label(self, text: str) -> str:
        """Replace the user ids in ``text`` by A and B."""
        return text.replace(str(self.a.user), "A").replace(str(self.b.user), "B")

    async def next_matching(
        self, client: Client, predicate: Callable[[Event], bool], what: str
    ) -> Event:
        """Events until one matches; an ``Error`` fails the step at once."""
        name = self.name(client)
        self.waiting[name] = self.label(what)
        with trio.fail_after(self.timeout):
            while True:
                event = await client.receive()
                if predicate(event):
                    break
                if isinstance(event, Error):
                    raise StepFailed(f"{name}: server error {event.code}: {event.detail}")
        self.waiting.pop(name, None)
        return event

    async def expect(
        self, client: Client, cls: type[E], predicate: Callable[[E], bool], what: str
    ) -> E:
        """The next event of ``cls`` that matches."""
        event = await self.next_matching(
            client, lambda e: isinstance(e, cls) and predicate(e), what
        )
        if not isinstance(event, cls):  # never: the predicate checked it
            raise StepFailed(f"wanted {cls.__name__}, got {format_event(event)}")
        return event

    async def room_event(self, client: Client, cls: type[Event], **want: Any) -> Event:
        """The client's next event from the demo room must be ``cls`` with ``want``."""
        what = f"{cls.__name__} {want}" if want else cls.__name__
        event = await self.next_matching(client, lambda e: room_of(e) == self.room, what)
        wrong = not isinstance(event, cls) or any(getattr(event, k) != v for k, v in want.items())
        check(
            not wrong,
            self.label(f"{self.name(client)}: wanted {what}, got {format_event(event)}"),
        )
        return event

    async def quiet(self, client: Client) -> None:
        """The client, a member of no room, receives nothing on chat-room for a while."""
        with trio.move_on_after(QUIET_WINDOW):
            while True:
                event = await client.receive()
                check(
                    room_of(event) is None,
                    self.label(f"{self.name(client)} is in no room but got {format_event(event)}"),
                )

    async def hello(self) -> str:
        check(self.a.user != self.b.user, f"A and B got the same user id {self.a.user}")
        return f"A={self.a.user} on {self.a.server}, B={self.b.user} on {self.b.server}"

    async def pings(self) -> str:
        for base, path in ((self.http1, "/ping1"), (self.http2, "/ping2")):
            status, body = await http_get(base, path, self.timeout)
            check(status == 200, f"GET {base}{path} answered {status}: {body[:200]}")
        for client in (self.a, self.b):
            seen: set[int] = set()
            while seen != {1, 2}:
                missing = " and ".join(f"Ping {n}" for n in (1, 2) if n not in seen)
                event = await self.expect(client, Ping, lambda e: True, missing)
                check(event.number in (1, 2), f"Ping with contents {event.number!r}")
                seen.add(event.number)
        return "A and B each got Ping 1 and Ping 2"

    async def chat(self) -> str:
        text = f"hello from A ({self.token})"
        await self.a.chat(text)
        stamps = []
        for client in (self.a, self.b):
            event = await self.expect(
                client, ChatMessage, lambda e: e.content == text, f"NewMessageReceived {text!r}"
            )
            check(
                event.posted_at.endswith("Z"),
                f"{self.name(client)}: postedAt {event.posted_at!r} does not end in Z",
            )
            stamps.append(f"{self.name(client)} at {event.posted_at}")
        return f"{text!r} reached " + ", ".join(stamps)

    async def a_joins(self) -> str:
        members = await self.a.join(self.room, timeout=self.timeout)
        check(
            members.users == {self.a.user},
            self.label(f"A: MemberList users {sorted(members.users)}, wanted [A]"),
        )
        await self.room_event(self.a, MemberList)
        await self.room_event(self.a, Joined, user=self.a.user)
        return f"A got MemberList [A] and JoinedRoom A in {self.room}"

    async def a_sends(self) -> str:
        text = f"A to the room ({self.token})"
        await self.a.send(self.room, text, timeout=self.timeout)
        await self.room_event(self.a, RoomMessage, user=self.a.user, message=text)
        await self.quiet(self.b)
        return f"A got its NewMessage; B got nothing from chat-room in {QUIET_WINDOW:g} s"

    async def b_joins(self) -> str:
        members = await self.b.join(self.room, timeout=self.timeout)
        check(
            members.users == {self.a.user, self.b.user},
            self.label(f"B: MemberList users {sorted(members.users)}, wanted A and B"),
        )
        await self.room_event(self.b, MemberList)
        await self.room_event(self.b, Joined, user=self.b.user)
        await self.room_event(self.a, Joined, user=self.b.user)
        return "B got MemberList [A, B]; A and B got JoinedRoom B"

    async def b_sends(self) -> str:
        text = f"B to the room ({self.token})"
        await self.b.send(self.room, text, timeout=self.timeout)
        for client in (self.a, self.b):
            await self.room_event(client, RoomMessage, user=self.b.user, message=text)
        return "A and B got NewMessage from B"

    async def a_leaves(self) -> str:
        await self.a.leave(self.room, timeout=self.timeout)
        await self.room_event(self.a, Left, user=self.a.user)
        await self.room_event(self.b, Left, user=self.a.user)
        return "A got its LeftRoom ack; B got LeftRoom A"

    async def b_sends_alone(self) -> str:
        text = f"B alone in the room ({self.token})"
        await self.b.send(self.room, text, timeout=self.timeout)
        await self.room_event(self.b, RoomMessage, user=self.b.user, message=text)
        await self.quiet(self.a)
        return f"B got its NewMessage; A got nothing from chat-room in {QUIET_WINDOW:g} s"


CONNECT = "A connects to server 1, B to server 2; both get Welcome"
STEPS: list[tuple[str, Callable[[Demo], Awaitable[str]]]] = [
    ("GET /ping1 on server 1, /ping2 on server 2: both clients get both pings", Demo.pings),
    ("A chats: A and B both receive it", Demo.chat),
    ("A joins the room: MemberList [A], then JoinedRoom A", Demo.a_joins),
    ("A sends to the room: A receives it, B (not a member) nothing", Demo.a_sends),
    ("B joins: MemberList [A, B], JoinedRoom B to both", Demo.b_joins),
    ("B sends to the room: A and B receive it", Demo.b_sends),
    ("A leaves: LeftRoom A to A (ack) and B", Demo.a_leaves),
    ("B sends again: B receives it, A (gone) nothing", Demo.b_sends_alone),
]


def _reason(exc: Exception) -> str:
    """Why a step failed; "" for the step's own deadline (the caller adds what was awaited)."""
    if isinstance(exc, StepFailed | trio.TooSlowError | ClientError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


async def _run_step(
    number: int,
    title: str,
    step: Callable[[], Awaitable[str]],
    seconds: float,
    waiting: dict[str, str],
    out: Callable[[str], None],
) -> bool:
    waiting.clear()
    try:
        with trio.fail_after(seconds):
            detail = await step()
    except Exception as exc:  # any failure is this step's FAIL, the demo goes on
        reason = _reason(exc)
        if not reason:  # the step's own deadline: say what was still awaited
            waits = [f"{name} waiting for {what}" for name, what in sorted(waiting.items())]
            reason = f"step took over {seconds:g} s" + (f" ({'; '.join(waits)})" if waits else "")
        out(f"FAIL {number}. {title}: {reason}")
        return False
    out(f"PASS {number}. {title}: {detail}")
    return True


async def run_demo(
    url1: str,
    url2: str,
    *,
    http1: str | None = None,
    http2: str | None = None,
    token: str | None = None,
    step_seconds: float = 5.0,
    out: Callable[[str], None] = say,
) -> bool:
    """Run the nine steps against two running servers; True if all passed."""
    tag = secrets.token_hex(4)
    out(f"demo: A -> {url1}, B -> {url2}, room demo-{tag}")
    results: list[bool] = []
    try:
        # One URL each: the demo checks what crosses servers, so neither may move.
        async with (
            open_client(url1, token=token, connect_timeout=step_seconds) as a,
            open_client(url2, token=token, connect_timeout=step_seconds) as b,
        ):
            waiting: dict[str, str] = {}
            demo = Demo(
                a, b, http1 or http_base(url1), http2 or http_base(url2), step_seconds, tag, waiting
            )
            results.append(await _run_step(1, CONNECT, demo.hello, step_seconds, waiting, out))
            for number, (title, method) in enumerate(STEPS, start=2):
                step = functools.partial(method, demo)
                results.append(await _run_step(number, title, step, step_seconds, waiting, out))
    except ClientError as exc:
        if results:
            out(f"demo: the connection failed: {exc}")
        else:
            out(f"FAIL 1. {CONNECT}: cannot connect: {exc}")
            results.append(False)
            for number, (title, _) in enumerate(STEPS, start=2):
                out(f"FAIL {number}. {title}: not run")
                results.append(False)
    passed = sum(results)
    out(f"demo: {passed} passed, {len(results) - passed} failed")
    return passed == len(STEPS) + 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the prototype's demo across two servers.")
    parser.add_argument("url1", help="websocket URL of server 1 (client A)")
    parser.add_argument("url2", help="websocket URL of server 2 (client B)")
    parser.add_argument("--http1", help="HTTP base URL of server 1 (default: from url1)")
    parser.add_argument("--http2", help="HTTP base URL of server 2 (default: from url2)")
    parser.add_argument("--token", help="a JWT for both clients, when the servers authenticate")
    parser.add_argument(
        "--step-timeout", type=float, default=5.0, help="seconds allowed per step (default 5)"
    )
    args = parser.parse_args(argv)
    run = functools.partial(
        run_demo,
        args.url1,
        args.url2,
        http1=args.http1,
        http2=args.http2,
        token=args.token,
        step_seconds=args.step_timeout,
    )
    try:
        return 0 if trio.run(run) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
