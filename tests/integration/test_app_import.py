"""Importing ``wsproto_trio.app`` has no side effect; ``app`` builds itself when served.

Each case runs in a fresh interpreter: whether the environment was read or
Hypercorn was patched is a property of one process's import.
"""

from __future__ import annotations

import sys

import trio

from ..procs import HYPERCORN, START_DEADLINE, clean_env

PROBE = """
import wsproto_trio.app
from hypercorn.protocol import ws_stream
print(getattr(ws_stream.WebsocketBuffer, "_wsproto_trio_guarded", False))
print(type(wsproto_trio.app.app).__name__)
"""


async def test_import_with_a_bad_environment_reads_nothing_and_patches_nothing() -> None:
    env = clean_env(PORT="abc", RATE_LIMIT="fast", REDIS_URL="http://x")
    with trio.fail_after(START_DEADLINE):
        result = await trio.run_process(
            [sys.executable, "-c", PROBE], env=env, check=False,
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    assert result.stdout.decode().split() == ["False", "_AppFromEnvironment"]


async def test_hypercorn_with_a_bad_environment_fails_with_one_line() -> None:
    """``-w 0``: the app runs in Hypercorn's own process, whose status we see.

    (With workers, Hypercorn 0.18's parent exits 0 whatever its worker's status.)
    """
    env = clean_env(RATE_LIMIT="fast")
    command = [HYPERCORN, "--worker-class", "trio", "-w", "0", "-b", "127.0.0.1:0",
               "wsproto_trio.app:app"]  # fmt: skip
    with trio.fail_after(START_DEADLINE):
        result = await trio.run_process(
            command, env=env, check=False, capture_stdout=True, capture_stderr=True
        )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and "RATE_LIMIT" in lines[0], stderr
