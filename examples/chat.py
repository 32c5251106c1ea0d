#!/usr/bin/env python3
"""Interactive client for the shared ``chat`` channel, on ``wsproto_trio.client``.

Usage:
    python examples/chat.py URL [URL ...] [--token JWT] [--linger SECONDS] [--no-batch]
                            [--no-recover] [--history K]

Every non-empty line typed on stdin is sent as a chat message; every event is
printed on one line (``[chat 12:00:01] hello``, ``[ping] 2``, ``[error ...]``;
chat times are the server's UTC ``postedAt``). With several URLs the client
moves to the next one when its server goes away; after a reconnect it recovers
what was said meanwhile and says so (``[reconnected after 2.1 s] chat: 3 recovered``).
End of input (Ctrl-D, or the end of a pipe) keeps printing for ``--linger``
seconds, so ``echo hi | python examples/chat.py URL`` shows its own message, then
exits; Ctrl-C exits at once. Exit status: 0, or 1 if no server could be reached
or the client gave up.

From a test: ``await run_chat([url], lines, out=collected.append)`` with any async
iterable of lines.
"""

import argparse
import codecs
import functools
import os
import signal
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence

import trio

from wsproto_trio.client import ClientError, open_client
from wsproto_trio.client.text import format_event


def say(line: str) -> None:
    print(line, flush=True)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read in a worker thread that is abandoned on cancellation.

    ``os.read`` on the raw descriptor (not ``sys.stdin.readline``) so that an abandoned
    thread holds no lock on ``sys.stdin`` when the interpreter shuts down.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    fd = sys.stdin.fileno()
    buffer = ""
    while True:
        chunk = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        buffer += decoder.decode(chunk, final=not chunk)
        *lines, buffer = buffer.split("\n")
        for line in lines:
            yield line.rstrip("\r")
        if not chunk:
            if buffer:
                yield buffer
            return


async def cancel_on_sigint(scope: trio.CancelScope) -> None:
    """Cancel ``scope`` on the first Ctrl-C (main thread only)."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def run_chat(
    urls: Sequence[str],
    lines: AsyncIterable[str],
    *,
    token: str | None = None,
    linger: float = 1.0,
    batched: bool = True,
    recover: bool = True,
    history: int | None = None,
    sigint: bool = False,
    out: Callable[[str], None] = say,
) -> int:
    """Send each non-empty line as a chat message and ``out`` every event.
    With ``sigint`` (main thread only), Ctrl-C ends the chat cleanly and returns 0."""
    status = 0
    try:
        async with open_client(
            urls, token=token, batched=batched, recover=recover, chat_history=history
        ) as client:
            mode = "batched frames" if client.batched else "one envelope per frame"
            print(
                f"connected to {client.url} as {client.user} ({mode}); Ctrl-D or Ctrl-C to quit",
                file=sys.stderr,
            )
            async with trio.open_nursery() as nursery:

                async def printer() -> None:
                    nonlocal status
                    try:
                        async for event in client:
                            out(format_event(event))
                    except ClientError as exc:
                        out(f"[stopped] {exc}")
                        status = 1
                    nursery.cancel_scope.cancel()

                nursery.start_soon(printer)
                if sigint:
                    nursery.start_soon(cancel_on_sigint, nursery.cancel_scope)
                async for line in lines:
                    if line.strip():
                        await client.chat(line)
                await trio.sleep(linger)
                nursery.cancel_scope.cancel()
    except ClientError as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Interactive client for the chat channel.")
    parser.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="websocket URL(s), e.g. ws://127.0.0.1:9000/websockets",
    )
    parser.add_argument("--token", help="a JWT, when the server requires authentication")
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to keep printing after end of input (default 1)",
    )
    parser.add_argument(
        "--no-batch", action="store_true", help="don't offer the ndjson subprotocol"
    )
    parser.add_argument(
        "--no-recover", action="store_true", help="reconnect without recovering missed messages"
    )
    parser.add_argument("--history", type=int, help="also show the chat's latest K messages")
    args = parser.parse_args(argv)
    run = functools.partial(
        run_chat,
        args.urls,
        stdin_lines(),
        token=args.token,
        linger=args.linger,
        batched=not args.no_batch,
        recover=not args.no_recover,
        history=args.history,
        sigint=True,
    )
    try:
        return trio.run(run)
    except KeyboardInterrupt:  # Ctrl-C while connecting
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
