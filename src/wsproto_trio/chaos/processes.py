"""The chaos run's processes: a redis-server and ``wsproto-trio serve`` servers.

Every process starts in a session of its own (so a Ctrl-C on the terminal
reaches only the chaos command, which then stops them in order) and is killed
by process group in a ``finally``, whatever ends the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import trio

START_DEADLINE = 30.0

# Every variable the server reads, so the caller's environment cannot leak in.
SERVER_VARIABLES = (
    "REDIS_URL", "REDIS_CLUSTER_NODES", "HOST", "PORT", "SERVER_ID", "MAX_MESSAGE_BYTES",
    "SEND_QUEUE_SIZE", "SEND_QUEUE_BYTES", "RATE_LIMIT", "RATE_BURST", "PRESENCE_TTL",
    "ADMIN_TOKEN", "LOG_LEVEL", "LOG_FORMAT", "MAX_CONNECTIONS", "ALLOWED_ORIGINS",
    "SHUTDOWN_TIMEOUT", "HEARTBEAT_INTERVAL", "HANDSHAKE_TIMEOUT", "HISTORY_SIZE",
    "HISTORY_TTL",
)  # fmt: skip


class ChaosSetupError(RuntimeError):
    """A process of the run could not be started (the message says which and why)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def http_get(
    port: int,
    path: str,
    token: str | None = None,
    timeout: float = 2.0,  # noqa: ASYNC109 - each probe is bounded; the callers poll
) -> tuple[int, bytes] | None:
    """``(status, body)`` of ``GET path`` on 127.0.0.1:port, or None when nothing answers."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    raw = b""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request)
                while not _complete(raw):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    raw += chunk
        except (OSError, trio.BrokenResourceError):
            return None
        head, _, body = raw.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None
        if b"transfer-encoding: chunked" in head.lower():
            body = _unchunk(body)
        return status, body
    return None


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole response (Hypercorn keeps the socket open)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    if b"transfer-encoding: chunked" in head.lower():
        return body.endswith(b"0\r\n\r\n")
    return False


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


async def http_status(port: int, path: str) -> int | None:
    answer = await http_get(port, path)
    return None if answer is None else answer[0]


def memory_mb(pid: int) -> tuple[float, float] | None:
    """``(VmRSS, VmHWM)`` of a live process in MB, from /proc (None when gone)."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        return None
    if len(found) != 2:
        return None
    return found["VmRSS"], found["VmHWM"]


class Managed:
    """One child process in its own session, killed with its group on ``kill``."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: trio.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("ab")
        self.process = await trio.lowlevel.open_process(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def signal(self, signum: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass

    async def kill(self) -> None:
        """SIGKILL the group and reap it (shielded: also runs while cancelled)."""
        process = self.process
        if process is not None:
            self.signal(signal.SIGKILL)
            self.signal(signal.SIGCONT)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        process = self.process
        if process is not None and process.returncode is None:
            self.signal(signal.SIGTERM)
            with trio.CancelScope(shield=True), trio.move_on_after(grace):
                await process.wait()
        await self.kill()


class RedisServer(Managed):
    """redis-server on a fixed port, without persistence: a restart loses everything."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__("redis", workdir / "redis.log")
        binary = shutil.which("redis-server")
        if binary is None:
            raise ChaosSetupError(
                "redis-server was not found on PATH (Debian: apt-get install redis-server)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()

    async def start(self) -> None:
        await self._spawn(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
        )  # fmt: skip
        with trio.move_on_after(START_DEADLINE):
            while self.running:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                async with stream:
                    await stream.send_all(b"PING\r\n")
                    if (await stream.receive_some(64)).startswith(b"+PONG"):
                        return
                await trio.sleep(0.05)
        raise ChaosSetupError(f"redis-server did not start; see {self.log_path}")


class ServerProcess(Managed):
    """``wsproto-trio serve`` (as ``python -m wsproto_trio.cli``) on a fixed port."""

    def __init__(
        self,
        index: int,
        workdir: Path,
        redis_port: int,
        presence_ttl: float,
        admin_token: str,
    ) -> None:
        super().__init__(f"s{index}", workdir / f"server-{index}.log")
        self.index = index
        self.port = free_port()
        self.redis_port = redis_port
        self.presence_ttl = presence_ttl
        self.admin_token = admin_token
        self.generation = 0
        self.server_id = ""
        self.peak_rss_mb = 0.0
        self.rss_mb = 0.0

    async def start(self) -> None:
        """Start (again, under a new SERVER_ID) and wait until ``/readyz`` says 200."""
        self.generation += 1
        self.server_id = f"chaos-{self.index}" + (
            f"-r{self.generation - 1}" if self.generation > 1 else ""
        )
        env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
        env.update(
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            HOST="127.0.0.1",
            PORT=str(self.port),
            SERVER_ID=self.server_id,
            PRESENCE_TTL=f"{self.presence_ttl}s",
            LOG_LEVEL="WARNING",
            RATE_LIMIT="off",
            ADMIN_TOKEN=self.admin_token,
            PYTHONUNBUFFERED="1",
        )
        await self._spawn([sys.executable, "-m", "wsproto_trio.cli", "serve"], env)
        with trio.move_on_after(START_DEADLINE):
            while self.running:
                if await http_status(self.port, "/readyz") == 200:
                    return
                await trio.sleep(0.1)
        raise ChaosSetupError(f"server {self.server_id} did not get ready; see {self.log_path}")

    def sample_memory(self) -> None:
        if self.process is None or not self.running:
            return
        found = memory_mb(self.process.pid)
        if found is not None:
            self.rss_mb = found[0]
            self.peak_rss_mb = max(self.peak_rss_mb, found[1])
