"""Shared fixtures: a real redis-server per test on a free port.

Nothing here fakes Redis: ``redis_server`` starts the real binary (so a test can
stop, restart and inspect it) and stops it afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import RedisProcess

REDIS_MISSING = (
    "redis-server was not found on PATH. The test command in README.md installs it "
    "(apt-get install -y redis-server); on another system install Redis 6 or newer."
)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(REDIS_MISSING)
    with tempfile.TemporaryDirectory(prefix="wsproto-redis-") as tmp:
        process = RedisProcess(binary, Path(tmp))
        process.start()
        try:
            yield process
        finally:
            process.stop()
