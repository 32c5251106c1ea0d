"""Fixtures: a real local Redis Cluster (three masters, three replicas) per test.

A test that kills or reshapes the cluster gets its own (``redis_cluster``, about
two seconds to start); every process is killed by process group afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cluster_support import LocalCluster
from ..conftest import REDIS_MISSING


@pytest.fixture
def redis_cluster() -> Iterator[LocalCluster]:
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
