#!/usr/bin/env python3
"""Join a chat room, say something, watch it, leave; on ``wsproto_trio.client``.

Usage:
    python examples/room.py URL [URL ...] ROOM [--send TEXT ...] [--token JWT]
                            [--history K] [--duration SECONDS | --follow]

Joins ROOM and prints the member list (with the subjects' names when the server
authenticates), sends each ``--send`` text, prints the room's events for
``--duration`` seconds (default 3) or, with ``--follow``, until Ctrl-C, then
leaves and prints the ``LeftRoom`` acknowledgement. If the connection drops
meanwhile the client reconnects (to the next URL if its server is gone),
rejoins with the room's position and prints whether what was said meanwhile was
recovered. Exit status 0, or 1 on a server error, a missed deadline or no
connection.

From a test: ``await run_room([url], "lobby", ["hi"], duration=0.5, out=lines.append)``
(``follow=True`` installs a SIGINT handler, so only from the main thread).
"""

import argparse
import functools
import signal
from collections.abc import Callable, Sequence

import trio

from wsproto_trio.client import (
    Client,
    ClientError,
    Connected,
    Disconnected,
    Error,
    Event,
    Joined,
    Left,
    Lost,
    MemberList,
    Other,
    Reconnected,
    RoomMessage,
    open_client,
)
from wsproto_trio.client.text import format_event


def say(line: str) -> None:
    print(line, flush=True)


def _shown(event: Event, room: str) -> bool:
    """Room events, errors, and what the connection went through."""
    match event:
        case RoomMessage() | Joined() | Left() | MemberList():
            return event.room == room
        case Lost():
            return event.room == room
        case Error() | Disconnected() | Reconnected():
            return True
        case Connected():
            return event.reconnect
        case Other():
            return event.channel == "chat-room"
    return False


async def _print_events(client: Client, room: str, out: Callable[[str], None]) -> None:
    async for event in client:
        if _shown(event, room):
            out(format_event(event))


async def _watch(
    client: Client, room: str, seconds: float, follow: bool, out: Callable[[str], None]
) -> None:
    """Print the room's events for ``seconds``, or until SIGINT if ``follow``."""
    with trio.CancelScope() as scope:
        if not follow:
            scope.deadline = trio.current_time() + seconds
            await _print_events(client, room, out)
            return
        failure: ClientError | None = None
        async with trio.open_nursery() as nursery:

            async def on_sigint() -> None:
                with trio.open_signal_receiver(signal.SIGINT) as signals:
                    async for _ in signals:
                        scope.cancel()

            nursery.start_soon(on_sigint)
            try:
                await _print_events(client, room, out)
            except ClientError as exc:  # raised after the nursery, not wrapped in a group
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure


async def run_room(
    urls: Sequence[str],
    room: str,
    messages: Sequence[str] = (),
    *,
    token: str | None = None,
    history: int | None = None,
    duration: float = 3.0,
    follow: bool = False,
    timeout: float = 5.0,  # noqa: ASYNC109 - a deadline per server answer, not for the call
    out: Callable[[str], None] = say,
) -> int:
    """Join ``room``, send ``messages``, watch, leave; returns the exit status."""
    try:
        async with open_client(urls, token=token, timeout=timeout) as client:
            out(f"connected as {client.user} to server {client.server}")
            await client.join(room, history=history)  # its MemberList is printed below
            for text in messages:
                await client.send(room, text)
            await _watch(client, room, duration, follow, out)
            await client.leave(room)
            # Print what arrived up to (and including) our own LeftRoom.
            while (event := client_next(client)) is not None:
                if _shown(event, room):
                    out(format_event(event))
            out(f"left {room} (acknowledged)")
            return 0
    except ClientError as exc:
        out(f"room: {exc}")
    except trio.TooSlowError as exc:
        out(f"timed out: {exc}")
    return 1


def client_next(client: Client) -> Event | None:
    """An event already received, without waiting (None when there is none)."""
    try:
        return client.receive_nowait()
    except trio.WouldBlock:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Join a chat room, send, watch, leave.")
    parser.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="websocket URL(s), e.g. ws://127.0.0.1:9000/websockets",
    )
    parser.add_argument("room", help="room name (1 to 100 characters)")
    parser.add_argument(
        "--send",
        nargs="+",
        action="extend",
        default=[],
        metavar="TEXT",
        help="message(s) to send to the room; may be repeated",
    )
    parser.add_argument("--token", help="a JWT, when the server requires authentication")
    parser.add_argument("--history", type=int, help="also show the room's latest K messages")
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
        args.urls,
        args.room,
        args.send,
        token=args.token,
        history=args.history,
        duration=args.duration,
        follow=args.follow,
        timeout=args.timeout,
    )
    try:
        return trio.run(run)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
