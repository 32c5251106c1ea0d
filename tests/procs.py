"""Server subprocesses for the process and fault tests: start, signal, kill, figures.

Every process is started in a session of its own and its whole process group is
killed in a ``finally``; nothing here sleeps to synchronise (waits poll with a
deadline).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .support import Client, free_port, http_request, wait_until_async

BIN = Path(sys.executable).parent
WSPROTO_TRIO = str(BIN / "wsproto-trio")
HYPERCORN = str(BIN / "hypercorn")
START_DEADLINE = 20.0

# Every variable the server reads, so the caller's environment cannot leak in.
CONFIG_VARIABLES = (
    "REDIS_URL", "HOST", "PORT", "SERVER_ID", "MAX_MESSAGE_BYTES", "SEND_QUEUE_SIZE",
    "SEND_QUEUE_BYTES", "RATE_LIMIT", "RATE_BURST", "PRESENCE_TTL", "ADMIN_TOKEN",
    "LOG_LEVEL", "LOG_FORMAT", "MAX_CONNECTIONS", "ALLOWED_ORIGINS", "SHUTDOWN_TIMEOUT",
    "HEARTBEAT_INTERVAL", "HANDSHAKE_TIMEOUT", "AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY",
    "AUTH_JWKS_URL", "AUTH_AUDIENCE", "AUTH_ISSUER", "AUTH_LEEWAY", "AUTH_ANONYMOUS",
    "AUTH_REFRESH_NOTICE",
)  # fmt: skip


def figure(name: str, value: float) -> None:
    """One line the issue's closing note can quote (visible with ``pytest -s``)."""
    print(f"FIGURE {name}={value:.3f}")


def clean_env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


@dataclass
class ServerProcess:
    process: trio.Process
    log_path: Path
    port: int
    server_id: str

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/websockets"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    async def get(self, path: str) -> tuple[int, Any]:
        return await http_request("GET", self.http + path)

    async def wait_ready(self, timeout: float = START_DEADLINE) -> None:
        async def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early with {self.process.returncode}")
            try:
                status, _ = await self.get("/readyz")
            except OSError:
                return False
            return status == 200

        await wait_until_async(ready, timeout=timeout)

    async def wait_exit(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


async def kill_group(process: trio.Process) -> None:
    """Kill the process and whatever it started, let it run again, then reap it."""
    for signum in (signal.SIGKILL, signal.SIGCONT):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
    with trio.CancelScope(shield=True), trio.fail_after(10):
        await process.wait()


@asynccontextmanager
async def spawn(
    command: list[str], tmp_path: Path, server_id: str, port: int, **variables: str
) -> AsyncIterator[ServerProcess]:
    """Start a server process; on failure print its log; always kill its group at the end."""
    env = clean_env(SERVER_ID=server_id, **variables)
    async with spawn_with_env(command, tmp_path, server_id, port, env) as server:
        yield server


@asynccontextmanager
async def spawn_with_env(
    command: list[str], tmp_path: Path, server_id: str, port: int, env: dict[str, str]
) -> AsyncIterator[ServerProcess]:
    """``spawn`` with the whole environment given (``server_id`` names the log).

    Without SERVER_ID in ``env`` each of several Hypercorn workers picks its own.
    """
    log_path = tmp_path / f"{server_id}.log"
    log_file: IO[bytes] = log_path.open("wb")
    try:
        process = await trio.lowlevel.open_process(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        server = ServerProcess(process, log_path, port, server_id)
        try:
            yield server
        except BaseException:
            print(f"---- output of {server_id} ({' '.join(command)}) ----")
            print(server.log())
            raise
        finally:
            await kill_group(process)
    finally:
        log_file.close()


@asynccontextmanager
async def spawn_server(
    tmp_path: Path, server_id: str, **variables: str
) -> AsyncIterator[ServerProcess]:
    """``wsproto-trio serve`` on a free port."""
    port = free_port()
    async with spawn(
        [WSPROTO_TRIO, "serve"], tmp_path, server_id, port,
        PORT=str(port), HOST="127.0.0.1", **variables,
    ) as server:  # fmt: skip
        yield server


async def expect_closed_with(ws: WebSocketConnection, code: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
    reason = closed.value.reason
    assert reason is not None and reason.code == code, reason


async def next_of(client: Client, kind: str, timeout: float) -> Any:
    """Skip envelopes until one of type ``kind`` arrives; returns its contents."""
    with trio.fail_after(timeout):
        while True:
            envelope = await client.receive(timeout)
            if envelope["message"]["type"] == kind:
                return envelope["message"]["contents"]


async def collect(client: Client, seconds: float) -> list[dict[str, Any]]:
    """Every envelope that arrives within ``seconds`` (a bounded listen, not a sleep)."""
    got: list[dict[str, Any]] = []
    with trio.move_on_after(seconds):
        while True:
            got.append(await client.receive(seconds + 1))
    return got


async def scrape_metric(server: ServerProcess, name: str) -> float:
    """One unlabelled sample of the server's ``/metrics``, e.g. ``wsproto_connections``."""
    status, text = await server.get("/metrics")
    assert status == 200 and isinstance(text, str), (status, text)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def process_memory_mb(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process, in MB, from /proc."""
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024 / 1e6
    return found


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
