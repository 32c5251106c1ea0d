#!/usr/bin/env python3
"""Join a chat room, say something, watch it, leave.

Usage:
    python examples/room.py ws://127.0.0.1:9000/websockets ROOM [--send TEXT ...]
                            [--duration SECONDS | --follow]

Says ``Hello`` to learn its own user id, joins ROOM and prints the member list, sends
each ``--send`` text as a ``SendMessage`` (all in one frame when the server accepts the
ndjson subprotocol), prints the room's events for ``--duration`` seconds (default 3) or,
with ``--follow``, until Ctrl-C, then leaves and prints the ``LeftRoom`` acknowledgement.
Exit status 0, or 1 on a server error, a missed deadline or a lost connection.

From a test: ``await run_room(url, "lobby", ["hi"], duration=0.5, out=lines.append)``
(``follow=True`` installs a SIGINT handler, so only from the main thread).
"""

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, HandshakeError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _client import (
    Client,
    Envelope,
    ServerError,
    cancel_on_sigint,
    closed_text,
    describe,
    envelope,
    field,
    format_envelope,
    in_room,
    kind,
    open_client,
    say,
)


def _shown(env: Envelope, room: str) -> bool:
    return in_room(env, room) or kind(env)[0] == "error"


async def _print_events(client: Client, room: str, out: Callable[[str], None]) -> None:
    while True:
        env = await client.receive()
        if _shown(env, room):
            out(format_envelope(env))


async def _watch(
    client: Client, room: str, seconds: float, follow: bool, out: Callable[[str], None]
) -> None:
    """Print the room's events (and errors) for ``seconds``, or until SIGINT if ``follow``."""
    if not follow:
        with trio.move_on_after(seconds):
            await _print_events(client, room, out)
        return
    with trio.CancelScope() as scope:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_sigint, scope)
                await _print_events(client, room, out)
        except BaseExceptionGroup as group:  # strict nurseries wrap even the body's error
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


async def run_room(
    url: str,
    room: str,
    messages: Sequence[str] = (),
    *,
    duration: float = 3.0,
    follow: bool = False,
    timeout: float = 5.0,  # noqa: ASYNC109 - a deadline per server answer, not for the call
    out: Callable[[str], None] = say,
) -> int:
    """Join ``room``, send ``messages``, watch, leave; returns the exit status."""
    async with open_client(url, name="room") as client:
        try:
            me, server = await client.hello(timeout)
            out(f"connected as {me} to server {server}")

            await client.send("chat-room", "JoinRoom", {"room": room})
            members = await client.expect(
                lambda e: in_room(e, room) and kind(e)[1] == "MemberList", timeout, "MemberList"
            )
            out(format_envelope(members))

            await client.send_many(
                envelope("chat-room", "SendMessage", {"room": room, "message": text})
                for text in messages
            )
            await _watch(client, room, duration, follow, out)

            await client.send("chat-room", "LeaveRoom", {"room": room})
            with trio.fail_after(timeout):  # print what still arrives until our own LeftRoom
                while True:
                    env = await client.receive()
                    if _shown(env, room):
                        out(format_envelope(env))
                    if kind(env) == ("error", "Error"):
                        return 1
                    if (
                        in_room(env, room)
                        and kind(env)[1] == "LeftRoom"
                        and field(env, "user") == me
                    ):
                        out(f"left {room} (acknowledged)")
                        return 0
        except ServerError as exc:
            out(f"[error {exc.code}] {exc.detail}")
        except trio.TooSlowError as exc:
            out(f"timed out: {exc or 'no LeftRoom acknowledgement'}")
        except ConnectionClosed as exc:
            out(closed_text(exc))
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Join a chat room, send, watch, leave.")
    parser.add_argument("url", help="websocket URL, e.g. ws://127.0.0.1:9000/websockets")
    parser.add_argument("room", help="room name (1 to 100 characters)")
    parser.add_argument(
        "--send",
        nargs="+",
        action="extend",
        default=[],
        metavar="TEXT",
        help="message(s) to send to the room; may be repeated",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--duration",
        type=float,
        default=3.0,
        help="seconds to print room events before leaving (default 3)",
    )
    group.add_argument("--follow", action="store_true", help="print room events until Ctrl-C")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="deadline for each server answer (default 5)"
    )
    args = parser.parse_args(argv)
    run = functools.partial(
        run_room,
        args.url,
        args.room,
        args.send,
        duration=args.duration,
        follow=args.follow,
        timeout=args.timeout,
    )
    try:
        return trio.run(run)
    except KeyboardInterrupt:
        return 130
    except (HandshakeError, OSError) as exc:
        print(f"room: cannot connect to {args.url}: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
