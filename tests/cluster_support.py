"""A real local Redis Cluster for the tests, started from ``redis-server``.

Three masters and three replicas on free ports (client and cluster-bus ports
both picked free, so nothing collides with other tests), each in its own
directory and its own process group, with a short ``cluster-node-timeout`` so
that a failover takes seconds. Everything here is synchronous and blocking:
async tests call it through ``trio.to_thread.run_sync`` so the servers under
test keep running meanwhile. Waits poll with a deadline; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from .conftest import REDIS_MISSING
from .support import free_port

DEADLINE = 30.0
NODE_TIMEOUT_MS = 1000


@dataclass
class Node:
    port: int
    bus_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            port=self.port, decode_responses=True, socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )  # fmt: skip

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            text = client.execute_command("CLUSTER", "INFO")
        if isinstance(text, dict):
            return text
        return dict(line.split(":", 1) for line in str(text).split() if ":" in line)

    def kill(self) -> None:
        """kill -9, of the node's whole process group."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class LocalCluster:
    binary: str
    workdir: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nodes: list[Node] = field(default_factory=list)

    @property
    def seeds(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", node.port) for node in self.nodes if node.alive)

    @property
    def seeds_text(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.seeds)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        started = [self._spawn_up() for _ in range(count)]
        self._cli_run(
            "create",
            *(n.address for n in started),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        )
        self.wait_healthy(replicas=self.replicas)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def _cli(self) -> str:
        return str(Path(self.binary).with_name("redis-cli"))

    def _cli_run(self, *args: str, timeout: float = DEADLINE) -> None:
        """``redis-cli --cluster ...``; a failure says what redis-cli said."""
        done = subprocess.run(
            [self._cli(), "--cluster", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            output = done.stdout.decode(errors="replace")[-2000:]
            raise RuntimeError(f"redis-cli --cluster {args[0]} failed: {output}")

    def _spawn(self) -> Node:
        port, bus_port = free_port(), free_port()
        while bus_port == port:
            bus_port = free_port()
        workdir = self.workdir / str(port)
        workdir.mkdir(parents=True)
        node = Node(port, bus_port, workdir)
        log = (workdir / "redis.log").open("wb")  # kept with the node's dir, for post-mortems
        node.process = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
             "--cluster-config-file", str(workdir / "nodes.conf"),
             "--cluster-node-timeout", str(self.node_timeout_ms),
             # A replica of a master that died a moment ago must be allowed to
             # take over however stale it thinks it is.
             "--cluster-replica-validity-factor", "0",
             # As docs/deployment.md recommends: the other shards keep serving
             # while one fails over.
             "--cluster-require-full-coverage", "no",
             # CLUSTER SHARDS calls a replica "loading" until its replication
             # offset moves, which an idle master does at each replica ping.
             "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1",
             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.nodes.append(node)
        return node

    def _spawn_up(self) -> Node:
        """A node that is up. Free ports are picked, then bound by redis-server:
        another process of the machine may take one in between, and then the
        node exits at once; it is started again on other ports."""
        for _ in range(3):
            node = self._spawn()
            try:
                self._wait_up(node)
                return node
            except RuntimeError:
                if node.alive:
                    raise
                self.nodes.remove(node)
        raise RuntimeError("redis-server did not start on free ports three times")

    def _wait_up(self, node: Node) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                with node.client() as client:
                    if client.ping():
                        return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or not node.alive:
                    raise RuntimeError(f"redis-server on {node.port} did not start") from None
                time.sleep(0.02)

    # -- topology -------------------------------------------------------------

    def _live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    def shards(self) -> list[dict[str, Any]]:
        """``CLUSTER SHARDS`` as seen by a live node: [{"slots": [...], "master": port,
        "replicas": [ports]}], only shards that own slots."""
        for node in self._live():
            try:
                with node.client() as client:
                    raw = client.execute_command("CLUSTER", "SHARDS")
            except redis.exceptions.RedisError:
                continue
            return [_shard(entry) for entry in raw if _shard(entry)["slots"]]
        raise RuntimeError("no live node answers CLUSTER SHARDS")

    def master_ports(self) -> list[int]:
        return sorted(shard["master"] for shard in self.shards() if shard["master"] is not None)

    def owner(self, key: str) -> int:
        """Port of the master that owns ``key``'s slot (``key`` may be a channel)."""
        return self.owner_of_slot(key_slot(key.encode()))

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def healthy(self, replicas: int = 0) -> bool:
        """Every live node says ok, covers all slots, and agrees on the masters
        (and every shard has ``replicas`` replicas online, synchronised)."""
        views: set[tuple[int, ...]] = set()
        for node in self._live():
            try:
                info = node.info("cluster")
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    return False
                with node.client() as client:
                    raw = client.execute_command("CLUSTER", "SHARDS")
            except redis.exceptions.RedisError:
                return False
            shards = [_shard(entry) for entry in raw]
            if any(
                shard["slots"] and (shard["master"] is None or len(shard["replicas"]) < replicas)
                for shard in shards
            ):
                return False
            views.add(tuple(sorted(s["master"] for s in shards if s["slots"])))
        return len(views) == 1

    def wait_healthy(self, timeout: float = DEADLINE, replicas: int = 0) -> float:
        """Wait until ``healthy``; returns the seconds it took."""
        began = time.monotonic()
        while not self.healthy(replicas):
            if time.monotonic() - began > timeout:
                raise RuntimeError("cluster did not become healthy")
            time.sleep(0.05)
        return time.monotonic() - began

    # -- faults and changes ---------------------------------------------------

    def kill_master(self, port: int) -> None:
        if port not in self.master_ports():
            raise ValueError(f"{port} is not a master")
        self.node(port).kill()

    def wait_promoted(self, dead: int, timeout: float = DEADLINE) -> float:
        """After ``dead`` was killed: wait until a replica owns its slots and the
        cluster is ok again everywhere. Returns the seconds it took."""
        began = time.monotonic()
        while True:
            try:
                if dead not in self.master_ports() and self.healthy():
                    return time.monotonic() - began
            except RuntimeError:
                pass
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"no replica took over from {dead}")
            time.sleep(0.05)

    def add_master(self) -> Node:
        """Start an empty node and join it to the cluster as a master without slots."""
        existing = self.node(self.master_ports()[0])
        node = self._spawn_up()
        self._cli_run("add-node", node.address, existing.address)
        deadline = time.monotonic() + DEADLINE
        while not all(self._knows(other, node) for other in self._live()):
            if time.monotonic() > deadline:
                raise RuntimeError("the new node did not join")
            time.sleep(0.05)
        return node

    def _knows(self, observer: Node, node: Node) -> bool:
        with observer.client() as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        return any(
            f"127.0.0.1:{node.port}@" in line and "handshake" not in line
            for line in text.splitlines()
        )

    def rebalance(self, timeout: float = 120.0) -> None:
        """``redis-cli --cluster rebalance --cluster-use-empty-masters``: moves slots
        (and their keys) onto masters that have none."""
        anchor = self.node(self.master_ports()[0])
        self._cli_run(
            "rebalance",
            anchor.address,
            "--cluster-use-empty-masters",
            "--cluster-pipeline",
            "100",
            timeout=timeout,
        )
        self.wait_healthy()

    def reshard(self, source: int, target: int, slots: int, timeout: float = 120.0) -> None:
        """Move ``slots`` slots from master ``source`` to master ``target``."""
        ids = {port: self._node_id(port) for port in (source, target)}
        self._cli_run(
            "reshard",
            self.node(source).address,
            "--cluster-from",
            ids[source],
            "--cluster-to",
            ids[target],
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            "--cluster-pipeline",
            "100",
            timeout=timeout,
        )
        self.wait_healthy()

    def migrate_slot(self, slot: int, target: int) -> None:
        """Move one slot (and its keys) to master ``target``, as ``reshard`` does
        slot by slot: IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE."""
        source = self.owner_of_slot(slot)
        if source == target:
            return
        ids = {port: self._node_id(port) for port in self.master_ports()}
        with self.node(source).client() as src, self.node(target).client() as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
            while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
            for port in self.master_ports():
                if port not in (source, target):
                    with self.node(port).client() as other:
                        other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        self.wait_healthy()

    def owner_of_slot(self, slot: int) -> int:
        for shard in self.shards():
            ranges = shard["slots"]
            if any(ranges[i] <= slot <= ranges[i + 1] for i in range(0, len(ranges), 2)):
                return int(shard["master"])
        raise RuntimeError(f"no master owns slot {slot}")

    def _node_id(self, port: int) -> str:
        with self.node(port).client() as client:
            return str(client.execute_command("CLUSTER", "MYID"))

    # -- inspection -----------------------------------------------------------

    def shardnumsub(self, channel: str) -> int:
        """``PUBSUB SHARDNUMSUB channel`` on the master that owns its slot."""
        with self.node(self.owner(channel)).client() as client:
            pairs = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(pairs[1])

    def numsub(self, *channels: str) -> dict[str, int]:
        """Classic subscribers summed over every live node (a classic SUBSCRIBE
        lives on the one node it was made on)."""
        counts = dict.fromkeys(channels, 0)
        for node in self._live():
            with node.client() as client:
                pairs = client.execute_command("PUBSUB", "NUMSUB", *channels)
            for i in range(0, len(pairs), 2):
                counts[str(pairs[i])] += int(pairs[i + 1])
        return counts

    def cluster_client(self) -> redis.RedisCluster:
        host, port = self.seeds[0]
        return redis.RedisCluster(host=host, port=port, decode_responses=True)


def _shard(entry: Any) -> dict[str, Any]:
    """One ``CLUSTER SHARDS`` entry (RESP2: flat key/value lists) made readable."""
    fields = _pairs(entry)
    master: int | None = None
    replicas: list[int] = []
    for raw_node in fields["nodes"]:
        node = _pairs(raw_node)
        if node.get("health") != "online":
            continue
        if node["role"] == "master":
            master = int(node["port"])
        else:
            replicas.append(int(node["port"]))
    return {"slots": [int(s) for s in fields["slots"]], "master": master, "replicas": replicas}


def _pairs(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    return {str(raw[i]): raw[i + 1] for i in range(0, len(raw), 2)}


@contextmanager
def running_cluster() -> Iterator[LocalCluster]:
    """A started 3+3 cluster in a temporary directory, stopped (by process group) on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(REDIS_MISSING)
    with tempfile.TemporaryDirectory(prefix="wsproto-cluster-") as tmp:
        cluster = LocalCluster(binary, Path(tmp))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
