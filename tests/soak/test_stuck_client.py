"""Issue 3, item 5, against a real server process: one stuck client among many readers.

A ``wsproto-trio serve`` subprocess on a real Redis. A raw client completes the
websocket handshake and never reads (every connection receives ``chat``, so it
is in the fan-out of every message); ``STUCK_RECEIVERS`` batched clients read
everything while ``STUCK_MESSAGES`` chat messages of about 200 bytes are
published. The stuck client must be closed by the slow-consumer rule (counted
in ``wsproto_slow_consumer_closes_total``), every reader must get every message
in order, and the server's RSS must not grow by 20 MB or more.

The senders are pipelined but bounded: ``SENDERS`` connections send
``BATCH`` envelopes per ndjson frame, and none sends while more than ``WINDOW``
messages are published but not yet read by the slowest reader. The window is
well under ``SEND_QUEUE_SIZE`` (1024), so a reader that does read is never the
one closed: only the stuck client can overflow its queue. The pace is set by
how fast this test's one process can read: on a loaded 2-core machine about
30,000-60,000 deliveries a second, so the default 200 x 10,000 runs in about a
minute.

The window is also how far behind a reader may fall, and that costs server
memory: queued envelopes are shared, but each batched connection's writer joins
its backlog into a frame of its own. With a window of 800, in 2 runs of 7 the
readers fell far behind at some point (frames of up to 551 envelopes) and the
server's RSS peaked 63-65 MB above the start and kept 22-54 MB of it. With 200
(or 400) no frame over 16 envelopes was seen and RSS grew by about 4 MB.

``HEARTBEAT_INTERVAL`` is raised to 60 s: the stuck client sends nothing, and
the default heartbeat (10 s) drops a client silent for 20 s. On a slow machine
the stuck client's queue can take 10-20 s to fill at the test's pace, and the
heartbeat must not be the one that closes it: this test is about the queue bound.
"""

from __future__ import annotations

import json
import os
import struct
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from ..integration.test_slow_consumer import open_stuck_client
from ..procs import figure, process_cpu_s, process_memory_mb, scrape_metric, spawn_server
from ..support import Client, RedisProcess, open_client, wait_until_async

SENDERS = 8
BATCH = 25
WINDOW = 200
CONTENT_CHARS = 200
RSS_GROWTH_LIMIT_MB = 20.0
RUN_DEADLINE = 600.0
HEARTBEAT_INTERVAL = "60s"


def close_code_in(data: bytes) -> int | None:
    """The code of the first close frame in server-to-client bytes (frames unmasked)."""
    at = 0
    while at + 4 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, at)
            at += 2
        elif length == 127:
            if at + 8 > len(data):
                return None
            (length,) = struct.unpack_from("!Q", data, at)
            at += 8
        if opcode == 0x8:
            if length < 2:
                return 1005
            if at + 2 > len(data):
                return None
            code: int = struct.unpack_from("!H", data, at)[0]
            return code
        at += length
    return None


async def drain_stuck(stream: trio.SocketStream, timeout: float) -> tuple[bytes, bool]:
    """Read what the server had queued for the stuck client; True if it reached EOF."""
    data = b""
    with trio.move_on_after(timeout):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
        return data, True
    return data, False


@pytest.mark.soak
async def test_stuck_client_is_closed_and_every_reader_gets_every_message(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    receivers = int(os.environ.get("STUCK_RECEIVERS", "200"))
    total = int(os.environ.get("STUCK_MESSAGES", "10000"))
    readers_count = receivers + SENDERS  # the senders read everything too
    # Sender k sends sequence numbers 0, 1, ... of its share, in order.
    shares = [total // SENDERS + (k < total % SENDERS) for k in range(SENDERS)]
    received = [0] * readers_count
    frames = [0] * readers_count
    largest_frame = 0  # envelopes in the largest ndjson frame any reader got
    published = 0

    async with spawn_server(
        tmp_path,
        "stuck",
        REDIS_URL=redis_server.url,
        LOG_LEVEL="WARNING",
        RATE_LIMIT="off",
        HEARTBEAT_INTERVAL=HEARTBEAT_INTERVAL,
    ) as server:
        await server.wait_ready()
        pid = server.process.pid

        async def connections_are(n: int) -> bool:
            return await scrape_metric(server, "wsproto_connections") == n

        async def read_all(client: Client, index: int) -> None:
            """Read until every message arrived, checking each sender's order."""
            nonlocal largest_frame
            expected = [0] * SENDERS
            assert client.pending == [], client.pending
            count = 0
            while count < total:
                frame = await client.ws.get_message()
                assert isinstance(frame, str)
                frames[index] += 1
                lines = frame.split("\n")
                largest_frame = max(largest_frame, len(lines))
                for line in lines:
                    message = json.loads(line)["message"]
                    assert message["type"] == "NewMessageReceived", message
                    sender, seq, _ = message["contents"]["content"].split(":", 2)
                    k = int(sender)
                    assert int(seq) == expected[k], (index, k, seq, expected[k])
                    expected[k] += 1
                    count += 1
                received[index] = count
            assert expected == shares, (index, expected, shares)

        async def send_share(client: Client, k: int) -> None:
            nonlocal published
            pad = "x" * CONTENT_CHARS
            seq = 0
            while seq < shares[k]:
                n = min(BATCH, shares[k] - seq)
                while published + n - min(received) > WINDOW:
                    await trio.sleep(0.002)
                frame = "\n".join(
                    json.dumps(
                        {
                            "channel": "chat",
                            "message": {
                                "type": "SubmitMessage",
                                "contents": f"{k}:{i}:{pad}"[:CONTENT_CHARS],
                            },
                        }
                    )
                    for i in range(seq, seq + n)
                )
                published += n
                seq += n
                await client.ws.send_message(frame)

        with trio.fail_after(RUN_DEADLINE):
            async with AsyncExitStack() as stack:
                readers = [
                    await stack.enter_async_context(open_client(server.ws, batched=True))
                    for _ in range(readers_count)
                ]
                stuck = await open_stuck_client(server.port)
                stack.push_async_callback(stuck.aclose)
                await wait_until_async(lambda: connections_are(readers_count + 1))
                before = process_memory_mb(pid)
                cpu_before = process_cpu_s(pid)
                closed_after: float | None = None

                async def watch_stuck() -> None:
                    nonlocal closed_after
                    while await scrape_metric(server, "wsproto_slow_consumer_closes_total") < 1:
                        await trio.sleep(0.1)
                    closed_after = time.monotonic() - began

                began = time.monotonic()
                async with trio.open_nursery() as watcher:
                    watcher.start_soon(watch_stuck)
                    async with trio.open_nursery() as nursery:
                        for index, client in enumerate(readers):
                            nursery.start_soon(read_all, client, index)
                        for k, client in enumerate(readers[receivers:]):
                            nursery.start_soon(send_share, client, k)
                    duration = time.monotonic() - began
                    # The watcher has seen the close by now unless it never happened.
                    with trio.move_on_after(5):
                        while closed_after is None:
                            await trio.sleep(0.05)
                    watcher.cancel_scope.cancel()

                assert received == [total] * readers_count
                assert await scrape_metric(server, "wsproto_slow_consumer_closes_total") == 1
                await wait_until_async(lambda: connections_are(readers_count))
                after = process_memory_mb(pid)
                server_cpu = process_cpu_s(pid) - cpu_before
                growth = after["VmRSS"] - before["VmRSS"]

                deliveries = receivers * total
                figure("stuck_client_rss_before_mb", before["VmRSS"])
                figure("stuck_client_rss_after_mb", after["VmRSS"])
                figure("stuck_client_rss_growth_mb", growth)
                figure("stuck_client_peak_rss_growth_mb", after["VmHWM"] - before["VmRSS"])
                figure("stuck_client_run_s", duration)
                figure("stuck_client_closed_after_s", closed_after or -1.0)
                figure("stuck_client_receiver_deliveries", deliveries)
                figure("stuck_client_all_deliveries", readers_count * total)
                figure("stuck_client_deliveries_per_s", readers_count * total / duration)
                figure("stuck_client_envelopes_per_frame", readers_count * total / sum(frames))
                figure("stuck_client_largest_frame_envelopes", largest_frame)
                figure("stuck_client_server_cpu_s", server_cpu)
                assert closed_after is not None
                assert growth < RSS_GROWTH_LIMIT_MB, (before, after)

                # What the stuck client finds once it reads at last. Not asserted: a
                # client that never reads cannot be sent a close frame (it would
                # queue behind the unread bytes), so the server gives up on its
                # 1013 after a second and the socket just ends (-1: no close frame).
                data, eof = await drain_stuck(stuck, 5.0)
                code = close_code_in(data)
                print(f"stuck client read {len(data)} bytes, then EOF: {eof}")
                figure("stuck_client_close_code", code if code is not None else -1)
