#!/usr/bin/env python3
"""Interactive client for the shared ``chat`` channel.

Usage:
    python examples/chat.py ws://127.0.0.1:9000/websockets [--linger SECONDS] [--no-batch]

Every non-empty line typed on stdin is sent as ``chat``/``SubmitMessage``; every envelope
that arrives is printed on one line (``[chat 12:00:01] hello``, ``[ping] 2``,
``[error invalid_message] ...``; chat times are the server's UTC ``postedAt``).
End of input (Ctrl-D, or the end of a pipe) keeps printing for ``--linger`` seconds, so
``echo hi | python examples/chat.py URL`` shows its own message, then exits; Ctrl-C exits
at once. Exit status: 0, or 1 if the connection failed or the server closed it.

From a test: ``await run_chat(url, lines, out=collected.append)`` with any async
iterable of lines.
"""

import argparse
import codecs
import functools
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, HandshakeError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _client import cancel_on_sigint, closed_text, describe, format_envelope, open_client, say


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


async def run_chat(
    url: str,
    lines: AsyncIterable[str],
    *,
    linger: float = 1.0,
    batched: bool = True,
    sigint: bool = False,
    out: Callable[[str], None] = say,
) -> int:
    """Send each non-empty line as a chat message and ``out`` every arriving envelope.
    With ``sigint`` (main thread only), Ctrl-C ends the chat cleanly and returns 0."""
    status = 0
    async with open_client(url, name="chat", batched=batched) as client:
        mode = "batched frames" if client.batched else "one envelope per frame"
        print(f"connected to {url} ({mode}); Ctrl-D or Ctrl-C to quit", file=sys.stderr)
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                nonlocal status
                try:
                    while True:
                        out(format_envelope(await client.receive()))
                except ConnectionClosed as exc:
                    out(closed_text(exc))
                    status = 1
                nursery.cancel_scope.cancel()

            nursery.start_soon(receiver)
            if sigint:
                nursery.start_soon(cancel_on_sigint, nursery.cancel_scope)
            try:
                async for line in lines:
                    if line.strip():
                        await client.send("chat", "SubmitMessage", line)
            except ConnectionClosed:
                return 1  # the receiver reports the close; leaving the nursery cancels it
            await trio.sleep(linger)
            nursery.cancel_scope.cancel()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Interactive client for the chat channel.")
    parser.add_argument("url", help="websocket URL, e.g. ws://127.0.0.1:9000/websockets")
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds to keep printing after end of input (default 1)",
    )
    parser.add_argument(
        "--no-batch", action="store_true", help="don't offer the ndjson subprotocol"
    )
    args = parser.parse_args(argv)
    run = functools.partial(
        run_chat,
        args.url,
        stdin_lines(),
        linger=args.linger,
        batched=not args.no_batch,
        sigint=True,
    )
    try:
        return trio.run(run)
    except KeyboardInterrupt:  # Ctrl-C while connecting
        return 0
    except (HandshakeError, OSError) as exc:
        print(f"chat: cannot connect to {args.url}: {describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
