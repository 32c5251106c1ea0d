"""Fixtures: a real local Redis Cluster (three masters, three replicas) per test.

A test that kills or reshapes the cluster gets its own (``redis_cluster``, about
two seconds to start); every process is killed by process group afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..cluster_support import LocalCluster, running_cluster


@pytest.fixture
def redis_cluster() -> Iterator[LocalCluster]:
    with running_cluster() as cluster:
        yield cluster
