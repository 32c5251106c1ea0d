"""Processes the bench owns: its redis-server, the two servers of each target, CPU/RSS probes.

Everything started here runs in its own session (process group) so that stopping it also stops
whatever it forked (Hypercorn workers), and every process is stopped by its own id at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
NDJSON = "wsproto-trio.ndjson"

_LIVE: list[subprocess.Popen[bytes]] = []


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: 5,000 idle sockets per server need it.

    Children inherit it, so calling this in the parent covers servers and load generators.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """A port the kernel just had free on 127.0.0.1 (small race, fine for a bench)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for proc, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    # Hypercorn workers may outlive a killed parent: reap the rest of the group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc in _LIVE:
        _LIVE.remove(proc)


@atexit.register
def stop_all() -> None:
    """Stop every process this module started and is still tracking."""
    for proc in list(_LIVE):
        _stop(proc, grace=2.0)


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start cmd in a new session with its output in log; tracked for stop_all."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _LIVE.append(proc)
    return proc


def tail(log: Path, n: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@dataclass
class Redis:
    """A private redis-server: no persistence, only for this bench run."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, logdir: Path) -> Redis:
        port = free_port()
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--protected-mode", "yes", "--maxclients", "20000"]
        proc = spawn(cmd, {}, logdir / "redis.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return cls(port, proc)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{tail(logdir / 'redis.log')}")

    def command(self, *args: str) -> str:
        """Run one command over a raw socket (inline protocol); used for FLUSHALL and INFO."""
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536).decode(errors="replace")

    def stop(self) -> None:
        _stop(self.proc)


# Extra environment for every server of ours, set by run.py (e.g. LOG_LEVEL=WARNING);
# empty by default so that ours runs with its default settings, INFO logging included.
OURS_ENV: dict[str, str] = {}


@dataclass(frozen=True)
class Target:
    """How to start one server of a target, and whether its clients ask for batched frames.

    ``history`` is the ``HISTORY_SIZE`` given to ours (None: the server's default, 100).
    The ceilings keep no history and assign no positions: they stay what they are, the
    cost of the stack (and of Python) without any of our features.
    """

    name: str
    kind: str  # "ours" | "ours-hypercorn" | "ceiling-asgi" | "ceiling-websockets"
    batched: bool
    workers: int = 1  # Hypercorn worker processes per server (ours-hypercorn only)
    history: int | None = None
    src: str | None = None  # another checkout's src/ for ours (PYTHONPATH): before/after runs

    @property
    def ours(self) -> bool:
        return self.kind.startswith("ours")

    def command(
        self, port: int, redis_url: str, server_id: str
    ) -> tuple[list[str], dict[str, str]]:
        if self.ours:
            env = {
                "REDIS_URL": redis_url,
                # The bench's senders publish far above the default 100/s per
                # connection, and a closed loop never needs a deeper queue than this.
                "RATE_LIMIT": "1000000/s",
                "SEND_QUEUE_SIZE": "4096",
                **OURS_ENV,
            }
            if self.history is not None:
                env["HISTORY_SIZE"] = str(self.history)
            if self.src is not None:
                env["PYTHONPATH"] = self.src
        if self.kind == "ours":
            env |= {"PORT": str(port), "SERVER_ID": server_id}
            return [str(VENV_BIN / "wsproto-trio"), "serve"], env
        if self.kind == "ours-hypercorn":
            # PROTOCOL.md 1's other way to start; with -w N every worker is its own server,
            # so each gets a random SERVER_ID rather than sharing one.
            if self.workers == 1:
                env["SERVER_ID"] = server_id
            cmd = [str(VENV_BIN / "hypercorn"), "--worker-class", "trio", "-w", str(self.workers)]
            return [*cmd, "-b", f"127.0.0.1:{port}", "wsproto_trio.app:app"], env
        if self.kind == "ceiling-asgi":
            cmd = [str(VENV_BIN / "hypercorn"), "--worker-class", "trio"]
            cmd += ["-b", f"127.0.0.1:{port}", "bench.ceiling_asgi:app"]
            return cmd, {"REDIS_URL": redis_url, "SEND_QUEUE_SIZE": "4096"}
        if self.kind == "ceiling-websockets":
            script = str(ROOT / "bench" / "ceiling_websockets.py")
            return [sys.executable, script, "--port", str(port), "--redis", redis_url], {}
        raise ValueError(self.kind)


TARGETS: dict[str, Target] = {
    "ours": Target("ours", "ours", batched=False),
    "ours-batched": Target("ours-batched", "ours", batched=True),
    "ours-h0": Target("ours-h0", "ours", batched=False, history=0),
    "ours-batched-h0": Target("ours-batched-h0", "ours", batched=True, history=0),
    "ours-w2": Target("ours-w2", "ours-hypercorn", batched=False, workers=2),
    "ours-w2-batched": Target("ours-w2-batched", "ours-hypercorn", batched=True, workers=2),
    "ceiling-asgi": Target("ceiling-asgi", "ceiling-asgi", batched=False),
    "ceiling-asgi-batched": Target("ceiling-asgi-batched", "ceiling-asgi", batched=True),
    "ceiling-websockets": Target("ceiling-websockets", "ceiling-websockets", batched=False),
}


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    """Status code of GET path on 127.0.0.1:port, or 0 when the server does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


@dataclass
class Server:
    """One running server process of a target, with the probes the report needs."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def tree(self) -> list[psutil.Process]:
        """The server process and all its descendants (Hypercorn may fork workers)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.tree())

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def hwm(self) -> int:
        """Peak RSS the kernel recorded (VmHWM) summed over the tree, 0 if unreadable."""
        total = 0
        for p in self.tree():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        _stop(self.proc)
        return self.proc.returncode


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User+system CPU seconds of procs, skipping any that already exited."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def start_servers(
    target: Target,
    redis_url: str,
    logdir: Path,
    tag: str,
    timeout: float = 30.0,
    ports: list[int] | None = None,
) -> list[Server]:
    """Start the two servers of target (on ``ports``, or free ones) and wait for /readyz 200."""
    servers = []
    for sid, port in zip(("a", "b"), ports or [free_port(), free_port()], strict=True):
        cmd, env = target.command(port, redis_url, f"bench-{sid}")
        log = logdir / f"{tag}-{sid}.log"
        servers.append(Server(f"bench-{sid}", port, spawn(cmd, env, log), log))
    deadline = time.monotonic() + timeout
    pending = list(servers)
    while pending:
        for s in list(pending):
            if not s.alive():
                stop_servers(servers)
                raise RuntimeError(f"{target.name} server exited at start:\n{tail(s.log)}")
            if http_get(s.port, "/readyz", 1.0) == 200:
                pending.remove(s)
        if time.monotonic() > deadline:
            stop_servers(servers)
            raise RuntimeError(f"{target.name} not ready in {timeout}s:\n{tail(pending[0].log)}")
        time.sleep(0.1)
    return servers


def stop_servers(servers: list[Server]) -> list[int | None]:
    """SIGTERM every server first, then wait for each: graceful stops overlap."""
    for s in servers:
        if s.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.proc.pid, signal.SIGTERM)
    return [s.stop() for s in servers]


@dataclass
class RssSampler:
    """Samples the summed RSS of each server's tree in a thread; peak is the max seen."""

    servers: list[Server]
    interval: float = 0.25
    peak: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for s in self.servers:
                self.peak[s.name] = max(self.peak.get(s.name, 0), s.rss())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for s in self.servers:
            self.peak[s.name] = max(self.peak.get(s.name, 0), s.rss(), s.hwm())
