"""Cluster mode for the bench: the same scenarios with the servers on a Redis Cluster.

    .venv/bin/python bench/run.py --cluster-masters 3 --scenarios broadcast,rooms \
        --targets ours,ours-cluster,ours-batched,ours-cluster-batched --repeat 3

``--cluster-masters N`` (bench/run.py) registers two more targets, ``ours-cluster``
and ``ours-cluster-batched``: ``wsproto-trio serve`` with ``REDIS_CLUSTER_NODES``
pointing at a local cluster of N masters without replicas, started on first use
(``tests/cluster_support.py``) and flushed before each run, as the bench flushes
its single Redis. So one run compares broadcast and rooms on one Redis with the
same on N masters. The bench's Redis CPU figure is still its single Redis's: for
the cluster targets it is not the cluster's (see docs/deployment.md for the
cluster's own costs, measured by ``bench/cluster_sim.py --measure``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from tests.cluster_support import LocalCluster

from bench import procs

_cluster: LocalCluster | None = None
_workdir: tempfile.TemporaryDirectory[str] | None = None
_masters = 3


@dataclass(frozen=True)
class ClusterTarget(procs.Target):
    """``ours`` with REDIS_CLUSTER_NODES instead of REDIS_URL."""

    def command(
        self, port: int, redis_url: str, server_id: str
    ) -> tuple[list[str], dict[str, str]]:
        cluster = _started()
        if server_id.endswith("-a"):  # the first server of a run: start from empty
            _flush(cluster)
        cmd, env = procs.Target(self.name, "ours", self.batched).command(port, redis_url, server_id)
        del env["REDIS_URL"]
        env["REDIS_CLUSTER_NODES"] = cluster.seeds_text
        return cmd, env


def register(masters: int) -> None:
    """Add the cluster targets; the cluster starts when a run first needs it."""
    global _masters
    _masters = masters
    for name, batched in (("ours-cluster", False), ("ours-cluster-batched", True)):
        procs.TARGETS[name] = ClusterTarget(name, "ours-cluster", batched)


def _started() -> LocalCluster:
    global _cluster, _workdir
    if _cluster is None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        _workdir = tempfile.TemporaryDirectory(prefix="wsproto-bench-cluster-")
        _cluster = LocalCluster(binary, Path(_workdir.name), masters=_masters, replicas=0)
        _cluster.start()
    return _cluster


def _flush(cluster: LocalCluster) -> None:
    for port in cluster.master_ports():
        with redis.Redis(port=port) as client:
            client.flushall()


def stop() -> None:
    global _cluster, _workdir
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
    if _workdir is not None:
        _workdir.cleanup()
        _workdir = None
