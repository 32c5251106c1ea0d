"""One chaos run: start the cluster, connect the clients, publish, inject faults, drain.

Layout (all on 127.0.0.1):

    clients --> client proxy i --> server i --> Redis proxy i --> redis-server

Every client lists every client proxy (starting with its own, so the clients are
spread over the servers) and moves to the next when its server is gone. The
clients, the proxies and the publisher run in this process; Redis and the
servers are subprocesses, stopped in a ``finally`` also on Ctrl-C.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import secrets
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from ..client import (
    ChatMessage,
    Client,
    ClientError,
    Disconnected,
    Lost,
    Reconnected,
    RoomMessage,
    open_client,
)
from .processes import RedisServer, ServerProcess, http_get
from .proxy import Proxy
from .report import Delivery, LostNotice, Records, Recovery, Sent
from .schedule import FAULT_KINDS, Fault, FaultKind, default_schedule

log = logging.getLogger("wsproto_trio.chaos")

SEND_TIMEOUT = 2.0  # a send waits this long for a reconnect, then counts as failed
DRAIN_TIMEOUT = 15.0  # after publishing: how long to wait for what is still in flight
GHOST_DEADLINE = 60.0


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float = 60.0
    servers: int = 2
    clients: int = 50
    rooms: int = 5
    rooms_per_client: int = 2
    rate: float = 20.0  # messages a second, over all clients
    recover: bool = True
    presence_ttl: float = 3.0
    seed: int = 1
    workdir: Path | None = None
    faults: frozenset[FaultKind] = frozenset(FAULT_KINDS)


class Cluster:
    """Redis, its proxies, the servers and the client proxies."""

    def __init__(self, options: Options, workdir: Path) -> None:
        self.redis = RedisServer(workdir)
        self.redis_proxies = [Proxy(self.redis.port) for _ in range(options.servers)]
        self.servers: list[ServerProcess] = []
        self.client_proxies: list[Proxy] = []
        self.options = options
        self.workdir = workdir
        self.admin_token = secrets.token_hex(16)

    @property
    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{p.port}/websockets" for p in self.client_proxies]

    async def start(self, nursery: trio.Nursery) -> None:
        await self.redis.start()
        for index, proxy in enumerate(self.redis_proxies):
            port = await nursery.start(proxy.serve)
            server = ServerProcess(
                index, self.workdir, port, self.options.presence_ttl, self.admin_token
            )
            self.servers.append(server)
        async with trio.open_nursery() as starting:
            for server in self.servers:
                starting.start_soon(server.start)
        for server in self.servers:
            proxy = Proxy(server.port)
            await nursery.start(proxy.serve)
            self.client_proxies.append(proxy)

    async def stop(self) -> None:
        for server in self.servers:
            await server.kill()
        await self.redis.kill()

    def sample_memory(self, records: Records) -> None:
        for server in self.servers:
            server.sample_memory()
            records.server_rss_mb[f"s{server.index}"] = {
                "rss": round(server.rss_mb, 1),
                "peak": round(server.peak_rss_mb, 1),
            }


class ChaosClient:
    """One client of the run: its subscriptions and what it received."""

    def __init__(self, index: int, urls: list[str], rooms: list[str]) -> None:
        self.index = index
        self.urls = urls
        self.rooms = rooms
        self.client: Client | None = None
        self.error: str | None = None

    async def run(
        self,
        options: Options,
        records: Records,
        clock: Callable[[], float],
        seq: itertools.count[int],
        stop: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        records.subscriptions[self.index] = {"chat", *(f"room:{r}" for r in self.rooms)}
        started = False
        try:
            async with open_client(
                self.urls,
                recover=options.recover,
                timeout=5.0,
                connect_timeout=30.0,
                ping_interval=5.0,
            ) as client:
                self.client = client
                for room in self.rooms:
                    await client.join(room)
                task_status.started()
                started = True
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._consume, client, records, clock, seq)
                    await stop.wait()
                    nursery.cancel_scope.cancel()
        except ClientError as exc:
            self.error = str(exc)
            log.warning("client %d stopped: %s", self.index, exc)
            if not started:  # the run goes on without it; its sends count as failed
                task_status.started()

    async def _consume(
        self,
        client: Client,
        records: Records,
        clock: Callable[[], float],
        seq: itertools.count[int],
    ) -> None:
        me = self.index
        async for event in client:
            match event:
                case ChatMessage():
                    records.deliveries.append(
                        Delivery(
                            next(seq), clock(), me, "chat", event.content, event.epoch, event.offset
                        )
                    )
                case RoomMessage():
                    records.deliveries.append(
                        Delivery(
                            next(seq),
                            clock(),
                            me,
                            f"room:{event.room}",
                            event.message,
                            event.epoch,
                            event.offset,
                        )
                    )
                case Lost():
                    stream = "chat" if event.room is None else f"room:{event.room}"
                    records.losts.append(
                        LostNotice(next(seq), clock(), me, stream, event.epoch, event.offset)
                    )
                case Reconnected():
                    records.recoveries.append(
                        Recovery(clock(), me, event.down_for, event.recovered, event.replayed)
                    )
                case Disconnected():
                    records.disconnects += 1
                case _:
                    pass


async def _send(client: ChaosClient, stream: str, msg_id: str, records: Records) -> None:
    target = client.client
    if target is None:
        records.send_failures += 1
        return
    try:
        if stream == "chat":
            await target.chat(msg_id, timeout=SEND_TIMEOUT)
        else:
            await target.send(stream.removeprefix("room:"), msg_id, timeout=SEND_TIMEOUT)
    except (ClientError, ValueError):
        records.send_failures += 1


async def _publish(
    clients: list[ChaosClient],
    options: Options,
    records: Records,
    clock: Callable[[], float],
    rng: random.Random,
) -> None:
    interval = 1.0 / options.rate
    start = trio.current_time()
    async with trio.open_nursery() as sends:
        for number in itertools.count():
            at = start + number * interval
            if at - start >= options.seconds:
                break
            await trio.sleep_until(at)
            sender = rng.choice(clients)
            stream = rng.choice(["chat", *(f"room:{r}" for r in sender.rooms)])
            msg_id = f"m{number}"
            records.sent[msg_id] = Sent(msg_id, sender.index, stream, clock())
            sends.start_soon(_send, sender, stream, msg_id, records)


async def _members(server: ServerProcess, room: str) -> set[str] | None:
    answer = await http_get(server.port, f"/api/rooms/{room}/members", server.admin_token)
    if answer is None or answer[0] != 200:
        return None
    try:
        users = json.loads(answer[1]).get("users")
    except (ValueError, AttributeError):
        return None
    return {u for u in users if isinstance(u, str)} if isinstance(users, list) else None


async def _ghosts(
    cluster: Cluster, clients: list[ChaosClient], dead: ServerProcess, records: Records
) -> None:
    """Seconds from the kill until no member list of the cluster (asked through a
    surviving server's admin API) names a connection of the dead server."""
    ghosts = {
        c.client.user
        for c in clients
        if c.client is not None and c.client.server == dead.server_id and c.client.user
    }
    survivors = [s for s in cluster.servers if s is not dead]
    rooms = sorted({room for c in clients for room in c.rooms})
    began = trio.current_time()
    with trio.move_on_after(GHOST_DEADLINE):
        while True:
            listed: set[str] = set()
            answered = False
            for room in rooms:
                members = await _members(survivors[0], room)
                if members is not None:
                    answered = True
                    listed |= members
            if answered and not ghosts & listed:
                records.ghost_presence_s = trio.current_time() - began
                return
            await trio.sleep(0.1)


async def _inject(
    fault: Fault,
    cluster: Cluster,
    clients: list[ChaosClient],
    records: Records,
    nursery: trio.Nursery,
) -> None:
    log.info("fault: %s for %.1f s", fault.label, fault.duration)
    match fault.kind:
        case "cut_clients":
            for proxy in cluster.client_proxies:
                proxy.cut()
            await trio.sleep(fault.duration)
            for proxy in cluster.client_proxies:
                proxy.restore()
        case "kill_server":
            server = cluster.servers[fault.server]
            cluster.sample_memory(records)
            server.signal(signal.SIGKILL)
            nursery.start_soon(_ghosts, cluster, clients, server, records)
            await server.kill()
            await trio.sleep(fault.duration)
            await server.start()
        case "cut_redis_link":
            proxy = cluster.redis_proxies[fault.server]
            proxy.cut()
            await trio.sleep(fault.duration)
            proxy.restore()
        case "restart_redis":
            await cluster.redis.kill()
            await trio.sleep(fault.duration)
            await cluster.redis.start()


async def _run_faults(
    schedule: list[Fault],
    cluster: Cluster,
    clients: list[ChaosClient],
    records: Records,
) -> None:
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for fault in schedule:
            await trio.sleep_until(start + fault.at)
            records.faults.append(fault)
            nursery.start_soon(_inject, fault, cluster, clients, records, nursery)


async def _sample(cluster: Cluster, records: Records) -> None:
    while True:
        cluster.sample_memory(records)
        await trio.sleep(1.0)


def _drained(clients: list[ChaosClient], records: Records) -> bool:
    """Every accepted message has reached every client of its stream."""
    got: dict[tuple[int, str], set[str]] = {}
    for d in records.deliveries:
        got.setdefault((d.client, d.stream), set()).add(d.msg_id)
    accepted = {
        d.msg_id
        for d in records.deliveries
        if (sent := records.sent.get(d.msg_id)) is not None and sent.sender == d.client
    }
    for msg_id in accepted:
        stream = records.sent[msg_id].stream
        for client in clients:
            if stream in records.subscriptions.get(client.index, ()) and msg_id not in got.get(
                (client.index, stream), ()
            ):
                return False
    return True


async def _stop_on_signals(scope: trio.CancelScope, interrupted: trio.Event) -> None:
    """SIGTERM or SIGHUP end the run like Ctrl-C does: every process is stopped."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.warning("chaos: %s; stopping", signal.Signals(signum).name)
            interrupted.set()
            scope.cancel()
            return


async def run_chaos(options: Options, say: Callable[[str], None] = print) -> Records:
    """Run the whole scenario and return its records."""
    if options.servers < 1 or options.clients < 1 or options.rooms < 1:
        raise ValueError("servers, clients and rooms must each be at least 1")
    rng = random.Random(options.seed)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="wsproto-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    records = Records()
    clients: list[ChaosClient] = []
    interrupted = trio.Event()
    cluster = Cluster(options, workdir)
    say(f"chaos: logs in {workdir}")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, nursery.cancel_scope, interrupted)
            await cluster.start(nursery)
            say(f"chaos: redis on {cluster.redis.port}, servers on "
                + ", ".join(str(s.port) for s in cluster.servers))  # fmt: skip
            urls = cluster.urls
            rooms = [f"room-{k}" for k in range(options.rooms)]
            per_client = min(options.rooms_per_client, options.rooms)
            clients = [
                ChaosClient(
                    j,
                    urls[j % len(urls) :] + urls[: j % len(urls)],
                    [rooms[(j + k) % len(rooms)] for k in range(per_client)],
                )
                for j in range(options.clients)
            ]
            stop = trio.Event()
            origin = trio.current_time()

            def clock() -> float:
                return trio.current_time() - origin

            seq = itertools.count()
            async with trio.open_nursery() as connecting:
                for client in clients:
                    connecting.start_soon(
                        partial(nursery.start, client.run, options, records, clock, seq, stop)
                    )
            say(f"chaos: {len(clients)} clients connected; publishing for {options.seconds:g} s")
            origin = trio.current_time()
            schedule = [
                f
                for f in default_schedule(options.seconds, options.servers)
                if f.kind in options.faults
            ]
            async with trio.open_nursery() as running:
                running.start_soon(_sample, cluster, records)
                running.start_soon(_run_faults, schedule, cluster, clients, records)
                await _publish(clients, options, records, clock, rng)
                say("chaos: publishing done; draining")
                with trio.move_on_after(DRAIN_TIMEOUT):
                    # Polling with a deadline: the condition spans every client's records.
                    while not _drained(clients, records):  # noqa: ASYNC110
                        await trio.sleep(0.2)
                running.cancel_scope.cancel()
            cluster.sample_memory(records)
            stop.set()
            await cluster.stop()  # before the proxies close, so no server logs a Redis outage
            nursery.cancel_scope.cancel()
    finally:
        await cluster.stop()
    records.interrupted = interrupted.is_set()
    failed = [c for c in clients if c.error]
    if failed:
        say(f"chaos: {len(failed)} clients stopped: {failed[0].error}")
    return records
