#!/usr/bin/env python3
"""Replay the original prototype's demo across two servers and check every step.

Usage:
    python examples/demo.py ws://127.0.0.1:9000/websockets ws://127.0.0.1:9001/websockets
                            [--http1 http://127.0.0.1:9000] [--http2 http://127.0.0.1:9001]
                            [--step-timeout SECONDS]

Starts nothing: both servers must be running, and share one Redis for the cross-server
steps to pass. The HTTP base of each server (for ``/ping1``, ``/ping2``) is derived from
its websocket URL (``ws://h:p/websockets`` -> ``http://h:p``) unless given. Client A
talks to server 1, client B to server 2:

 1. A and B connect and say Hello; each learns its user id from Welcome
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
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _client import (
    Client,
    Envelope,
    ServerError,
    closed_text,
    contents,
    describe,
    field,
    format_envelope,
    http_base,
    http_get,
    in_room,
    kind,
    open_client,
    say,
)

QUIET_WINDOW = 0.5  # seconds a non-member listens for room traffic that must not come


class StepFailed(Exception):
    """A step saw something other than what the protocol promises."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


@dataclass
class Demo:
    """The two connected clients and what the steps share."""

    a: Client
    b: Client
    http1: str
    http2: str
    timeout: float
    token: str

    @property
    def room(self) -> str:
        return f"demo-{self.token}"

    def label(self, text: str) -> str:
        """Replace the user ids in ``text`` by A and B."""
        return text.replace(str(self.a.user), "A").replace(str(self.b.user), "B")

    async def room_event(self, client: Client, type_: str, **want: Any) -> Envelope:
        """The client's next envelope from the demo room must be ``type_`` with ``want``."""
        what = self.label(f"{type_} {want}" if want else type_)
        env = await client.expect(lambda e: in_room(e, self.room), self.timeout, what)
        wrong = kind(env)[1] != type_ or any(field(env, k) != v for k, v in want.items())
        check(not wrong, self.label(f"{client.name}: wanted {what}, got {format_envelope(env)}"))
        return env

    async def quiet(self, client: Client) -> None:
        """The client, a member of no room, receives nothing on chat-room for a while."""
        with trio.move_on_after(QUIET_WINDOW):
            while True:
                env = await client.receive()
                check(
                    kind(env)[0] != "chat-room",
                    self.label(f"{client.name} is in no room but got {format_envelope(env)}"),
                )

    async def send_to_room(self, client: Client, text: str) -> None:
        await client.send("chat-room", "SendMessage", {"room": self.room, "message": text})

    async def hello(self) -> str:
        for client in (self.a, self.b):
            await client.hello(self.timeout)
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
                env = await client.expect(
                    lambda e: kind(e) == ("ping", "Ping"), self.timeout, missing
                )
                value = contents(env)
                check(value in (1, 2) and type(value) is int, f"Ping with contents {value!r}")
                seen.add(value)
        return "A and B each got Ping 1 and Ping 2"

    async def chat(self) -> str:
        text = f"hello from A ({self.token})"
        await self.a.send("chat", "SubmitMessage", text)
        stamps = []
        for client in (self.a, self.b):
            env = await client.expect(
                lambda e: kind(e) == ("chat", "NewMessageReceived") and field(e, "content") == text,
                self.timeout,
                f"NewMessageReceived {text!r}",
            )
            posted = field(env, "postedAt")
            check(
                isinstance(posted, str) and posted.endswith("Z"),
                f"{client.name}: postedAt {posted!r} does not end in Z",
            )
            stamps.append(f"{client.name} at {posted}")
        return f"{text!r} reached " + ", ".join(stamps)

    async def a_joins(self) -> str:
        await self.a.send("chat-room", "JoinRoom", {"room": self.room})
        env = await self.room_event(self.a, "MemberList")
        users = field(env, "users")
        check(users == [self.a.user], self.label(f"A: MemberList users {users}, wanted [A]"))
        await self.room_event(self.a, "JoinedRoom", user=self.a.user)
        return f"A got MemberList [A] and JoinedRoom A in {self.room}"

    async def a_sends(self) -> str:
        text = f"A to the room ({self.token})"
        await self.send_to_room(self.a, text)
        await self.room_event(self.a, "NewMessage", user=self.a.user, message=text)
        await self.quiet(self.b)
        return f"A got its NewMessage; B got nothing from chat-room in {QUIET_WINDOW:g} s"

    async def b_joins(self) -> str:
        await self.b.send("chat-room", "JoinRoom", {"room": self.room})
        env = await self.room_event(self.b, "MemberList")
        users = field(env, "users")
        check(
            isinstance(users, list)
            and sorted(map(str, users)) == sorted([str(self.a.user), str(self.b.user)]),
            self.label(f"B: MemberList users {users}, wanted A and B"),
        )
        await self.room_event(self.b, "JoinedRoom", user=self.b.user)
        await self.room_event(self.a, "JoinedRoom", user=self.b.user)
        return self.label(f"B got MemberList {users}; A and B got JoinedRoom B")

    async def b_sends(self) -> str:
        text = f"B to the room ({self.token})"
        await self.send_to_room(self.b, text)
        for client in (self.a, self.b):
            await self.room_event(client, "NewMessage", user=self.b.user, message=text)
        return "A and B got NewMessage from B"

    async def a_leaves(self) -> str:
        await self.a.send("chat-room", "LeaveRoom", {"room": self.room})
        await self.room_event(self.a, "LeftRoom", user=self.a.user)
        await self.room_event(self.b, "LeftRoom", user=self.a.user)
        return "A got its LeftRoom ack; B got LeftRoom A"

    async def b_sends_alone(self) -> str:
        text = f"B alone in the room ({self.token})"
        await self.send_to_room(self.b, text)
        await self.room_event(self.b, "NewMessage", user=self.b.user, message=text)
        await self.quiet(self.a)
        return f"B got its NewMessage; A got nothing from chat-room in {QUIET_WINDOW:g} s"


CONNECT = "A connects to server 1, B to server 2; both say Hello"
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
    if isinstance(exc, ServerError):
        return f"server error {exc}"
    if isinstance(exc, StepFailed | trio.TooSlowError):
        return str(exc)
    if isinstance(exc, ConnectionClosed):
        return closed_text(exc)
    if isinstance(exc, HandshakeError | OSError):
        return f"cannot connect: {describe(exc)}"
    return f"{type(exc).__name__}: {exc}"


async def _run_step(
    number: int,
    title: str,
    step: Callable[[], Awaitable[str]],
    seconds: float,
    clients: Sequence[Client],
    out: Callable[[str], None],
) -> bool:
    for client in clients:
        client.waiting_for = None
    try:
        with trio.fail_after(seconds):
            detail = await step()
    except Exception as exc:  # any failure is this step's FAIL, the demo goes on
        reason = _reason(exc)
        if not reason:  # the step's own deadline: say what was still awaited
            waits = [f"{c.name} waiting for {c.waiting_for}" for c in clients if c.waiting_for]
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
    step_seconds: float = 5.0,
    out: Callable[[str], None] = say,
) -> bool:
    """Run the nine steps against two running servers; True if all passed."""
    token = secrets.token_hex(4)
    out(f"demo: A -> {url1}, B -> {url2}, room demo-{token}")
    deadline = trio.current_time() + step_seconds  # step 1 = both connections + Hello

    def remaining() -> float:
        return max(0.0, deadline - trio.current_time())

    results: list[bool] = []
    try:
        # The sockets are opened here, outside any step's cancel scope: their nurseries
        # must outlive the steps.
        async with (
            open_client(url1, name="A", connect_timeout=step_seconds) as a,
            open_client(url2, name="B", connect_timeout=remaining()) as b,
        ):
            demo = Demo(
                a, b, http1 or http_base(url1), http2 or http_base(url2), step_seconds, token
            )
            results.append(await _run_step(1, CONNECT, demo.hello, remaining(), [a, b], out))
            for number, (title, method) in enumerate(STEPS, start=2):
                if not results[0]:
                    out(f"FAIL {number}. {title}: not run")
                    results.append(False)
                    continue
                step = functools.partial(method, demo)
                results.append(await _run_step(number, title, step, step_seconds, [a, b], out))
    except (HandshakeError, OSError) as exc:
        if results:
            out(f"demo: closing the connections failed: {describe(exc)}")
        else:
            out(f"FAIL 1. {CONNECT}: cannot connect: {describe(exc)}")
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
        step_seconds=args.step_timeout,
    )
    try:
        return 0 if trio.run(run) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
