"""Bounded soak: two servers on one Redis, hundreds of clients churning at random.

Run by CI as its own step (``pytest -m soak``). ``SOAK_SECONDS`` (default 60)
and ``SOAK_CLIENTS`` (default 500) size it. Stable members stay in one room for
the whole run and send room messages; churning clients connect, join, chat,
leave and disconnect around them. At the end every stable member must have
received every message sent to its room (zero loss while Redis is up), and
nothing may be left behind: Redis subscriptions, presence keys, trio tasks.
"""

from __future__ import annotations

import os
import random
import resource

import pytest
import trio

from ..support import Client, RedisProcess, is_presence_key, open_client, open_cluster, wait_until

ROOMS = [f"soak-{i}" for i in range(20)]
CONNECT_TIMEOUT = 60.0  # hundreds of handshakes at once on two shared cores


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            walk(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    return 0 if root is None else walk(root)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1e6


@pytest.mark.soak
async def test_soak(redis_server: RedisProcess) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "60"))
    total_clients = int(os.environ.get("SOAK_CLIENTS", "500"))
    stable_per_room = 3
    churners = total_clients - stable_per_room * len(ROOMS)
    rng = random.Random(2026)
    counts = {"connects": 0, "joins": 0, "leaves": 0, "chats": 0, "room_messages": 0}
    sent: dict[str, set[str]] = {room: set() for room in ROOMS}
    received: dict[str, set[str]] = {}

    # INFO would log every one of tens of thousands of messages into the CI output.
    # The clients share this process, and its two cores, with both servers: when the
    # process falls behind, they are slow readers through no fault of the server.
    # The slow-consumer rule has its own tests; here the queues are deep enough that
    # a lagging client is never closed, so loss is measured, not policy.
    async with open_cluster(
        redis_server.url, 2, log_level="WARNING",
        send_queue_size=100_000, send_queue_bytes=256 * 1024 * 1024,
    ) as servers:  # fmt: skip
        baseline_tasks = count_tasks()
        stop_churn = trio.Event()
        stop_sending = trio.Event()
        all_stable_joined = trio.Event()
        joined = 0
        rss_samples: list[float] = []

        async def stable(index: int, room: str) -> None:
            nonlocal joined
            server = servers[index % 2]
            async with open_client(
                server.ws, batched=index % 2 == 0, connect_timeout=CONNECT_TIMEOUT
            ) as client:
                await client.join(room)
                joined += 1
                if joined == stable_per_room * len(ROOMS):
                    all_stable_joined.set()
                mine: set[str] = set()
                received[client.user] = mine
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_room, client, room, mine)
                    await all_stable_joined.wait()
                    n = 0
                    while not stop_sending.is_set():
                        text = f"{client.user}:{n}"
                        n += 1
                        sent[room].add(text)
                        counts["room_messages"] += 1
                        await client.send(
                            "chat-room", "SendMessage", {"room": room, "message": text}
                        )
                        with trio.move_on_after(rng.uniform(0.3, 1.0)):
                            await stop_sending.wait()
                    # Wait until everything sent to the room has arrived here.
                    await wait_until(lambda: sent[room] <= mine, timeout=30)
                    nursery.cancel_scope.cancel()

        async def read_room(client: Client, room: str, mine: set[str]) -> None:
            while True:
                envelope = await client.receive(timeout=120)
                message = envelope["message"]
                assert message["type"] != "Error", envelope
                if message["type"] == "NewMessage" and message["contents"]["room"] == room:
                    mine.add(message["contents"]["message"])

        async def churn(index: int) -> None:
            await all_stable_joined.wait()
            # Spread the first connects over two seconds (load shaping, not a wait).
            with trio.move_on_after(rng.uniform(0, 2)):
                await stop_churn.wait()
            while not stop_churn.is_set():
                server = servers[rng.randrange(2)]
                async with open_client(
                    server.ws, batched=rng.random() < 0.5, connect_timeout=CONNECT_TIMEOUT
                ) as client:
                    counts["connects"] += 1
                    rooms = rng.sample(ROOMS, rng.randint(1, 3))
                    for room in rooms:
                        await client.send("chat-room", "JoinRoom", {"room": room})
                        counts["joins"] += 1
                    if rng.random() < 0.3:
                        await client.send("chat", "SubmitMessage", f"churn {index}")
                        counts["chats"] += 1
                    for room in rooms[: rng.randint(0, len(rooms))]:
                        await client.send("chat-room", "LeaveRoom", {"room": room})
                        counts["leaves"] += 1
                    with trio.move_on_after(rng.uniform(0.5, 3.0)):
                        await stop_churn.wait()

        async def sample_rss() -> None:
            while True:
                rss_samples.append(rss_mb())
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_rss)
            async with trio.open_nursery() as clients:
                for index in range(stable_per_room * len(ROOMS)):
                    clients.start_soon(stable, index, ROOMS[index % len(ROOMS)])
                for index in range(churners):
                    clients.start_soon(churn, index)
                with trio.fail_after(60):
                    await all_stable_joined.wait()
                await trio.sleep(seconds)  # the soak itself: load runs for this long
                stop_churn.set()
                stop_sending.set()
            nursery.cancel_scope.cancel()

        lost = sum(len(sent[room]) * stable_per_room for room in ROOMS) - sum(
            len(got) for got in received.values()
        )
        channels = [f"room:{room}" for room in ROOMS]
        await wait_until(lambda: sum(redis_server.numsub(*channels).values()) == 0)
        await wait_until(lambda: all(not s.app.hub.connections for s in servers))
        leftovers = [k for k in redis_server.key_list() if is_presence_key(k)]
        await wait_until(lambda: count_tasks() <= baseline_tasks)
        warm = rss_samples[len(rss_samples) // 3] if rss_samples else 0.0
        growth = rss_samples[-1] - warm if rss_samples else 0.0
        print(
            f"\nSOAK seconds={seconds:.0f} clients={total_clients} connects={counts['connects']} "
            f"joins={counts['joins']} leaves={counts['leaves']} chats={counts['chats']} "
            f"room_messages={counts['room_messages']} lost={lost} leftover_keys={len(leftovers)} "
            f"tasks={count_tasks()}/{baseline_tasks} rss_warm_mb={warm:.1f} "
            f"rss_growth_after_warmup_mb={growth:.1f}"
        )
        assert lost == 0
        assert leftovers == []
        assert growth < 50, rss_samples
