"""The load generator: several worker processes, each an asyncio loop holding many clients.

Why it looks like this:

* A 2-core machine runs the servers, Redis and the load generator side by side, so every
  microsecond the clients spend is taken from the servers. Each client is a plain
  ``asyncio.Protocol`` driving the ``websockets`` Sans-I/O ``ClientProtocol`` (handshake,
  framing, masking, ping/close handling all from the library), without a task, a queue and a
  future per received message as the high-level client has. The bench reports the load
  generator's CPU share so that one can see whether it was the bottleneck.
* Every published message carries a token ``#phase.sender.stream.seq.t_us#`` in its text.
  A receiver finds it with two ``bytes.find`` calls, whatever the server's JSON spacing and
  whether the frame is batched (``\\n``-separated envelopes): from it come the latency
  (``t_us`` is ``time.time()`` at send; one machine, one clock), loss (counted against what
  was sent), and order (``seq`` must grow per sender and stream, stream being the room).
* Closed loop by default: each worker keeps ``inflight`` of its own messages outstanding and
  sends the next one when one of its senders receives its own message back, which finds the
  saturation throughput without piling up unbounded queues. With ``rate`` set it is an open
  loop at that offered rate instead (used by the sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

NDJSON = "wsproto-trio.ndjson"


@dataclass
class ClientSpec:
    """One client to open: its global index, which server, its rooms, whether it sends."""

    index: int
    port: int
    rooms: list[str] = field(default_factory=list)
    sender: bool = False


@dataclass
class SetupSpec:
    """What one worker process connects and how it behaves for the whole run."""

    wid: int
    scenario: str  # broadcast | rooms | ping | idle
    batched: bool
    clients: list[ClientSpec]
    ping_ports: list[int] = field(default_factory=list)  # non-empty: this worker drives pings
    ping_streams: int = 4  # concurrent keep-alive GET streams per server
    pad: int = 64
    connect_concurrency: int = 64
    seed: int = 0


@dataclass
class PhaseSpec:
    """One measured phase: start time shared by all workers, this worker's share of the load."""

    phase: int
    start_at: float
    duration: float
    rate: float | None  # messages/s offered by this worker; None: closed loop
    inflight: int  # this worker's outstanding messages in closed loop


class WsClient(asyncio.Protocol):
    """A websocket client as a bare protocol: bytes in, frames out to the worker, no tasks."""

    def __init__(self, worker: Worker, spec: ClientSpec) -> None:
        self.worker = worker
        self.index = spec.index
        self.key = b"%dx%d" % (worker.spec.wid, spec.index)
        self.rooms = [r.encode() for r in spec.rooms]
        subprotocols = [NDJSON] if worker.spec.batched else None
        uri = parse_uri(f"ws://127.0.0.1:{spec.port}/websockets")
        self.proto = ClientProtocol(uri, subprotocols=subprotocols, max_size=None)  # type: ignore[arg-type]
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.joined: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.fragments: list[bytes] | None = None
        self.closed = False
        self.memberlists = 0
        self.last: dict[bytes, int] = {}
        self.seqs: dict[bytes, int] = {}
        self.ping_rx: dict[int, list[float]] = {1: [], 2: []}

    @property
    def subprotocol(self) -> str | None:
        return self.proto.subprotocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proto.send_request(self.proto.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.proto.receive_data(data)
        for ev in self.proto.events_received():
            if type(ev) is Frame:
                op = ev.opcode
                if op is Opcode.TEXT:
                    if ev.fin:
                        self.worker.on_text(self, bytes(ev.data))
                    else:
                        self.fragments = [bytes(ev.data)]
                elif op is Opcode.CONT and self.fragments is not None:
                    self.fragments.append(bytes(ev.data))
                    if ev.fin:
                        text, self.fragments = b"".join(self.fragments), None
                        self.worker.on_text(self, text)
            elif isinstance(ev, Response) and not self.opened.done():
                exc = self.proto.handshake_exc
                if exc is None:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(exc)
        self.flush()

    def flush(self) -> None:
        """Write what the protocol wants sent (pongs, close replies, our frames)."""
        assert self.transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send_text(self, payload: bytes) -> bool:
        try:
            self.proto.send_text(payload)
        except InvalidState:
            return False
        self.flush()
        return True

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during handshake"))
        self.worker.on_closed(self)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(InvalidState):
                self.proto.send_close(1000)
                self.flush()
            self.transport.close()


class Worker:
    """One load-generator process: connects its clients, then obeys phase commands."""

    def __init__(self, conn: Connection, spec: SetupSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.scenario = spec.scenario
        self.batched = spec.batched
        self.rng = random.Random(spec.seed * 1000 + spec.wid)
        self.pad = b"x" * spec.pad
        self.clients: list[WsClient] = []
        self.senders: list[WsClient] = []
        self.rr = 0
        self.joining = False
        self.connect_errors: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._reset(-1)

    def _reset(self, phase: int) -> None:
        self.phase_tag = b"p%d" % phase
        self.lat = array("d")
        self.received = self.stale = self.reorders = self.errors = self.sent = 0
        self.frames = self.envelopes = 0
        self.inflight = 0
        self.sending = False
        self.closed_in_phase = 0
        self.close_codes: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.first_tx = 0.0
        self.last_rx = 0.0
        self.ping_tx: dict[int, list[float]] = {1: [], 2: []}
        self.window = 0
        for c in self.clients:
            c.last.clear()
            c.seqs.clear()
            c.ping_rx = {1: [], 2: []}

    # ---- receiving (hot path) -------------------------------------------------------------

    def on_text(self, c: WsClient, data: bytes) -> None:
        now = time.time()
        self.frames += 1
        # Envelopes of every kind (not only the measured messages): an ndjson frame
        # holds one more than it has newlines; a plain frame holds exactly one.
        self.envelopes += data.count(b"\n") + 1 if self.batched else 1
        if self.joining and b"MemberList" in data:
            c.memberlists += data.count(b"MemberList")
            if c.joined is not None and c.memberlists >= len(c.rooms) and not c.joined.done():
                c.joined.set_result(None)
        if b"Error" in data:
            self.errors += data.count(b"Error")
            if len(self.error_samples) < 5:
                self.error_samples.append(data[:300].decode(errors="replace"))
        if self.scenario in ("ping", "idle"):
            self._on_ping(c, data, now)
            return
        find = data.find
        pos = find(b"#")
        while pos >= 0:
            end = find(b"#", pos + 1)
            if end < 0:
                break
            parts = data[pos + 1 : end].split(b".")
            pos = find(b"#", end + 1)
            if len(parts) != 5:
                continue
            if parts[0] != self.phase_tag:
                self.stale += 1
                continue
            self.received += 1
            key = parts[1] + b"/" + parts[2]
            seq = int(parts[3])
            if seq <= c.last.get(key, 0):
                self.reorders += 1
            else:
                c.last[key] = seq
            self.lat.append(now * 1000.0 - int(parts[4]) / 1000.0)
            if parts[1] == c.key:
                self.inflight -= 1
                if self.sending and self.window:
                    self._send_one(c if self.scenario == "broadcast" else None)
        self.last_rx = now

    def _on_ping(self, c: WsClient, data: bytes, now: float) -> None:
        for env in data.split(b"\n"):
            if b"Ping" not in env:
                continue
            try:
                n = json.loads(env)["message"]["contents"]
            except (ValueError, KeyError, TypeError):
                continue
            if n in (1, 2):
                c.ping_rx[n].append(now)
                self.received += 1
                self.last_rx = now

    def on_closed(self, c: WsClient) -> None:
        self.closed_in_phase += 1
        code = c.proto.close_code
        self.close_codes[str(code)] = self.close_codes.get(str(code), 0) + 1

    # ---- sending --------------------------------------------------------------------------

    def _send_one(self, c: WsClient | None) -> None:
        """Send one chat or room message with a fresh token (and count it as in flight)."""
        rooms = self.scenario == "rooms"
        if c is None:
            if rooms:
                c = self.clients[self.rng.randrange(len(self.clients))]
                while not c.rooms:
                    c = self.clients[self.rng.randrange(len(self.clients))]
            else:
                c = self.senders[self.rr % len(self.senders)]
                self.rr += 1
        stream = c.rooms[self.rng.randrange(len(c.rooms))] if rooms else b"chat"
        seq = c.seqs.get(stream, 0) + 1
        c.seqs[stream] = seq
        token = b"#%s.%s.%s.%d.%d#" % (self.phase_tag, c.key, stream, seq, time.time_ns() // 1000)
        if rooms:
            payload = (
                b'{"channel":"chat-room","message":{"type":"SendMessage","contents":{"room":"'
                + stream
                + b'","message":"'
                + token
                + self.pad
                + b'"}}}'
            )
        else:
            payload = (
                b'{"channel":"chat","message":{"type":"SubmitMessage","contents":"'
                + token
                + self.pad
                + b'"}}'
            )
        if c.send_text(payload):
            self.sent += 1
            self.inflight += 1

    async def _drive(self, p: PhaseSpec) -> None:
        """Offer load for the phase: prime the window (closed loop) or pace (open loop)."""
        await asyncio.sleep(max(0.0, p.start_at - time.time()))
        end = p.start_at + p.duration
        self.first_tx = time.time()
        if p.rate is None:
            self.window = p.inflight
            for _ in range(p.inflight):
                self._send_one(None)
            await asyncio.sleep(max(0.0, end - time.time()))
        else:
            t0 = time.time()
            while (now := time.time()) < end:
                due = int((now - t0) * p.rate) - self.sent
                for _ in range(min(due, 1000)):
                    self._send_one(None)
                await asyncio.sleep(0.002)
        self.sending = False

    async def _ping_stream(
        self, p: PhaseSpec, port: int, n: int, share: int, slot: float = 0.0
    ) -> None:
        """Sequential GET /ping<n> on one keep-alive connection, paced or windowed.

        The k-th Ping n a client receives is matched to the k-th GET /ping<n> sent (over all
        streams of that server) for latency. Exact with one stream per server; with several,
        concurrent requests may be published in a slightly different order than sent, which
        shifts individual samples by about one request's service time. In open loop the streams
        of one server are staggered by ``slot`` so that they do not fire in bursts.
        """
        await asyncio.sleep(max(0.0, p.start_at - time.time()))
        end = p.start_at + p.duration
        request = b"GET /ping%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % n
        observer = self.clients[0]
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        t0, k = time.time() + (slot / p.rate if p.rate else 0.0), 0
        try:
            while time.time() < end:
                if p.rate is None:
                    while len(self.ping_tx[n]) - len(observer.ping_rx[n]) >= max(1, share):
                        if time.time() >= end:
                            return
                        await asyncio.sleep(0.001)
                else:
                    delay = t0 + k / p.rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                self.ping_tx[n].append(time.time())
                k += 1
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                self.sent += 1
                if not head.startswith(b"http/1.1 200"):
                    self.errors += 1
                if b"connection: close" in head or not head.startswith(b"http/1.1"):
                    writer.close()
                    reader = writer = None
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.errors += 1
            self.error_samples.append(f"ping stream {n}: {exc!r}")
        finally:
            if writer is not None:
                writer.close()

    # ---- commands -------------------------------------------------------------------------

    async def _connect(self, spec: ClientSpec, sem: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        last: BaseException | None = None
        async with sem:
            for _ in range(5):
                try:
                    _, c = await loop.create_connection(
                        lambda: WsClient(self, spec), "127.0.0.1", spec.port
                    )
                    await asyncio.wait_for(c.opened, 30)
                except Exception as exc:
                    last = exc
                    await asyncio.sleep(0.5)
                    continue
                self.clients.append(c)
                if spec.sender:
                    self.senders.append(c)
                return
        self.connect_errors.append(repr(last))

    async def setup(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.spec.connect_concurrency)
        await asyncio.gather(*(self._connect(s, sem) for s in self.spec.clients))
        self.clients.sort(key=lambda c: c.index)
        self.senders.sort(key=lambda c: c.index)
        joined = 0
        if self.scenario == "rooms":
            self.joining = True
            loop = asyncio.get_running_loop()
            for c in self.clients:
                c.joined = loop.create_future()
                if not c.rooms:
                    c.joined.set_result(None)
                for room in c.rooms:
                    c.send_text(
                        b'{"channel":"chat-room","message":{"type":"JoinRoom","contents":{"room":"'
                        + room
                        + b'"}}}'
                    )
            pending = [c.joined for c in self.clients if c.joined is not None]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), 60)
            joined = sum(min(c.memberlists, len(c.rooms)) for c in self.clients)
            self.joining = False
        return {
            "connected": len(self.clients),
            "failed": len(self.connect_errors),
            "connect_errors": self.connect_errors[:5],
            "batched": sum(1 for c in self.clients if c.subprotocol == NDJSON),
            "joined": joined,
            "rooms_wanted": sum(len(c.rooms) for c in self.clients),
        }

    def start_phase(self, p: PhaseSpec) -> dict[str, Any]:
        self._reset(p.phase)
        self.sending = self.scenario != "idle"
        has_rooms = any(c.rooms for c in self.clients)
        if self.scenario in ("broadcast", "rooms") and (self.senders or has_rooms):
            self._spawn(self._drive(p))
        elif self.scenario == "ping" and self.spec.ping_ports:
            self._spawn(self._ping_all(p))
        else:
            self.sending = False
        return {"ok": True}

    async def _ping_all(self, p: PhaseSpec) -> None:
        """``ping_streams`` GET streams per server: /ping1 to the first, /ping2 to the second."""
        ports, per = self.spec.ping_ports, max(1, self.spec.ping_streams)
        share = max(1, p.inflight // len(ports))
        rate = None if p.rate is None else p.rate / (len(ports) * per)
        q = PhaseSpec(p.phase, p.start_at, p.duration, rate, p.inflight)
        await asyncio.gather(
            *(
                self._ping_stream(q, port, i + 1, share, j / per)
                for i, port in enumerate(ports)
                for j in range(per)
            )
        )
        self.sending = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def poll(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "sending": self.sending,
            "open": sum(1 for c in self.clients if not c.closed),
        }

    def result(self) -> dict[str, Any]:
        return {
            **self.poll(),
            "stale": self.stale,
            "frames": self.frames,
            "envelopes": self.envelopes,
            "reorders": self.reorders,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "closed": self.closed_in_phase,
            "close_codes": self.close_codes,
            "first_tx": self.first_tx,
            "last_rx": self.last_rx,
            "lat_ms": self.lat.tobytes(),
            "ping_tx": self.ping_tx,
            "ping_rx": [c.ping_rx for c in self.clients] if self.scenario == "ping" else [],
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            cmd, arg = await loop.run_in_executor(None, self.conn.recv)
            if cmd == "setup":
                self.conn.send(await self.setup())
            elif cmd == "phase":
                self.conn.send(self.start_phase(arg))
            elif cmd == "poll":
                self.conn.send(self.poll())
            elif cmd == "result":
                self.conn.send(self.result())
            elif cmd == "close":
                for c in self.clients:
                    c.close()
                await asyncio.sleep(0.2)
                self.conn.send({"ok": True})
                return


def worker_main(conn: Connection, spec: SetupSpec) -> None:
    """Process entry point: more file descriptors, then the asyncio loop."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(Worker(conn, spec).serve())


class LoadGen:
    """Parent-side handle on the worker processes; every call fans out to all workers."""

    def __init__(self, specs: list[SetupSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, spec), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, cmd: str, args: list[Any] | None = None, timeout: float = 300) -> list[Any]:
        for i, conn in enumerate(self.conns):
            conn.send((cmd, None if args is None else args[i]))
        out = []
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if not conn.poll(timeout):
                raise TimeoutError(f"load generator {proc.pid} did not answer {cmd!r}")
            out.append(conn.recv())
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("close", timeout=10)
        for proc in self.procs:
            proc.join(3)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, 9)
                proc.join(1)
