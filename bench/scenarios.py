"""One measured run: start a target's two servers, connect the clients, offer load, measure.

Each (target, scenario, repetition) gets fresh servers so that peak RSS, CPU and leftover
state (rooms, subscriptions, queues) belong to that run alone; the Redis is shared by the
whole bench invocation and flushed between runs.
"""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import procs, report
from bench.loadgen import ClientSpec, LoadGen, PhaseSpec, SetupSpec

ROOM_MEMBERS = 4
DEFAULT_INFLIGHT = {"broadcast": 16, "rooms": 64, "ping": 16, "idle": 0}


@dataclass
class Options:
    """Knobs shared by every run of one bench invocation (mirrors the CLI)."""

    clients: int = 200
    duration: float = 10.0
    loadgen_procs: int = 2
    senders: int = 4
    rooms: int = 500
    idle_per_server: int = 5000
    inflight: int | None = None
    rate: float | None = None  # offered messages/s; None = closed loop
    pad: int = 64
    ping_streams: int = 4
    drain_timeout: float = 20.0
    out: Path = Path("bench/results")


def fanout(scenario: str, clients: int) -> int:
    """Deliveries one published message should produce."""
    return ROOM_MEMBERS if scenario == "rooms" else clients


def build_specs(
    scenario: str, target: procs.Target, ports: list[int], opt: Options, seed: int
) -> list[SetupSpec]:
    """Split the clients across servers (alternating) and load-generator processes.

    Client i goes to server i % 2 and worker (i // 2) % P, so each worker holds clients of both
    servers, and the first ``senders`` clients (the broadcast senders) sit on both servers and
    in every worker. Rooms get two members on each server, chosen at random (seeded).
    """
    n = opt.idle_per_server * 2 if scenario == "idle" else opt.clients
    nproc = max(1, min(opt.loadgen_procs, n))
    specs = [
        SetupSpec(
            wid=w,
            scenario=scenario,
            batched=target.batched,
            clients=[],
            pad=opt.pad,
            ping_streams=opt.ping_streams,
            seed=seed,
            connect_concurrency=64 if scenario != "idle" else 128,
        )
        for w in range(nproc)
    ]
    by_index: dict[int, ClientSpec] = {}
    for i in range(n):
        cs = ClientSpec(
            index=i, port=ports[i % 2], sender=(scenario == "broadcast" and i < opt.senders)
        )
        by_index[i] = cs
        specs[(i // 2) % nproc].clients.append(cs)
    if scenario == "rooms" and n >= ROOM_MEMBERS:
        rng = random.Random(seed)
        even, odd = list(range(0, n, 2)), list(range(1, n, 2))
        for r in range(opt.rooms):
            half = ROOM_MEMBERS // 2
            for i in rng.sample(even, half) + rng.sample(odd, ROOM_MEMBERS - half):
                by_index[i].rooms.append(f"r{r}")
    if scenario == "ping":
        specs[0].ping_ports = list(ports)
    return specs


def worker_share(scenario: str, spec: SetupSpec, specs: list[SetupSpec], total: float) -> float:
    """This worker's part of a total rate or window, in proportion to what it drives."""
    if scenario == "broadcast":
        mine = sum(c.sender for c in spec.clients)
        return total * mine / max(1, sum(sum(c.sender for c in s.clients) for s in specs))
    if scenario == "rooms":
        mine = sum(bool(c.rooms) for c in spec.clients)
        return total * mine / max(1, sum(sum(bool(c.rooms) for c in s.clients) for s in specs))
    return total if spec.ping_ports else 0.0


class Probe:
    """CPU seconds of servers, Redis, load generator and the whole machine over one window.

    The machine's busy time minus ours is the background load (other work on a shared box):
    a run with a high ``background_cpu`` is noisy and worth repeating.
    """

    def __init__(self, servers: list[procs.Server], redis: procs.Redis, lg: LoadGen) -> None:
        self.servers = servers
        self.redis = [psutil.Process(redis.proc.pid)]
        self.lg = [psutil.Process(pid) for pid in lg.pids]

    def sample(self) -> dict[str, float]:
        t = psutil.cpu_times()
        return {
            "machine": t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0),
            "server": sum(s.cpu_seconds() for s in self.servers),
            "redis": procs.cpu_seconds(self.redis),
            "loadgen": procs.cpu_seconds(self.lg),
            "wall": time.monotonic(),
        }


def log_findings(servers: list[procs.Server]) -> list[str]:
    """Tracebacks and error lines in the servers' logs: crashes the numbers would hide."""
    found = []
    for s in servers:
        try:
            text = s.log.read_text(errors="replace")
        except OSError:
            continue
        tb = text.count("Traceback (most recent call last)")
        errors = len(re.findall(r"\b(ERROR|CRITICAL)\b", text))
        if tb or errors:
            found.append(f"{s.name}: {tb} tracebacks, {errors} ERROR lines in {s.log}")
    return found


def _phase(
    lg: LoadGen,
    specs: list[SetupSpec],
    scenario: str,
    phase: int,
    duration: float,
    rate: float | None,
    inflight: int,
    expected_fanout: int,
    probe: Probe,
    drain_timeout: float,
) -> dict[str, Any]:
    """Run one phase on all workers, wait for the drain, and compute its metrics."""
    start_at = time.time() + 0.5
    args = []
    for s in specs:
        w_rate = None if rate is None else worker_share(scenario, s, specs, rate)
        w_window = max(1, round(worker_share(scenario, s, specs, inflight))) if inflight else 0
        args.append(PhaseSpec(phase, start_at, duration, w_rate, w_window))
    cpu0 = probe.sample()
    lg.call("phase", args)
    time.sleep(max(0.0, start_at + duration - time.time()))
    while any(p["sending"] for p in lg.call("poll")):
        time.sleep(0.05)
    polls = lg.call("poll")
    sent = sum(p["sent"] for p in polls)
    expected = sent * expected_fanout
    deadline, last_change, last = time.monotonic() + drain_timeout, time.monotonic(), -1
    drain_timed_out = False
    while True:
        received = sum(p["received"] for p in lg.call("poll"))
        if received >= expected:
            break
        if received != last:
            last, last_change = received, time.monotonic()
        elif time.monotonic() - last_change > 3.0:
            break
        if time.monotonic() > deadline:
            drain_timed_out = True
            break
        time.sleep(0.1)
    cpu1 = probe.sample()
    results = lg.call("result")
    received = sum(r["received"] for r in results)
    frames = sum(r["frames"] for r in results)
    envelopes = sum(r["envelopes"] for r in results)
    if scenario == "ping":
        lat = ping_latencies(results)
    else:
        lat = np.concatenate([np.frombuffer(r["lat_ms"], dtype=np.float64) for r in results])
    first_tx = min((r["first_tx"] for r in results if r["first_tx"]), default=start_at)
    last_rx = max((r["last_rx"] for r in results), default=0.0)
    window = max(1e-3, last_rx - first_tx) if received else duration
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    total_cpu = cpu["server"] + cpu["redis"] + cpu["loadgen"]
    close_codes: dict[str, int] = {}
    for r in results:
        for code, n in r["close_codes"].items():
            close_codes[code] = close_codes.get(code, 0) + n
    return {
        "sent": sent,
        "offered_msgs_per_s": sent / duration,
        "offered_deliveries_per_s": sent * expected_fanout / duration,
        "expected": expected,
        "received": received,
        "lost": max(0, expected - received),
        "drain_timed_out": drain_timed_out,
        "frames": frames,
        "envelopes": envelopes,
        "envelopes_per_frame": envelopes / frames if frames else None,
        "reorders": sum(r["reorders"] for r in results),
        "stale": sum(r["stale"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "error_samples": [e for r in results for e in r["error_samples"]][:5],
        "closed_during_run": sum(r["closed"] for r in results),
        "close_codes": close_codes,
        "deliveries_per_s": received / window,
        **report.percentiles(lat),
        "server_cpu_s": cpu["server"],
        "redis_cpu_s": cpu["redis"],
        "loadgen_cpu_s": cpu["loadgen"],
        "server_cpu_us_per_delivery": cpu["server"] / received * 1e6 if received else None,
        "loadgen_cpu_share": cpu["loadgen"] / total_cpu if total_cpu else None,
        "machine_busy": cpu["machine"] / (cpu["wall"] * (os.cpu_count() or 1)),
        "background_cpu": max(0.0, cpu["machine"] - total_cpu) / cpu["wall"],
    }


def ping_latencies(results: list[dict[str, Any]]) -> np.ndarray:
    """Match the k-th Ping n a client got with the k-th GET /ping<n> sent (sequential streams)."""
    tx = {1: np.array([], dtype=np.float64), 2: np.array([], dtype=np.float64)}
    for r in results:
        for n, ts in r["ping_tx"].items():
            if ts:
                tx[int(n)] = np.asarray(ts, dtype=np.float64)
    lats = []
    for r in results:
        for per_client in r["ping_rx"]:
            for n, rx in per_client.items():
                k = min(len(rx), tx[int(n)].size)
                if k:
                    lats.append((np.asarray(rx[:k]) - tx[int(n)][:k]) * 1000.0)
    return np.concatenate(lats) if lats else np.array([], dtype=np.float64)


def _setup(
    target: procs.Target, scenario: str, redis: procs.Redis, opt: Options, tag: str, seed: int
) -> tuple[list[procs.Server], LoadGen, list[SetupSpec], dict[str, Any]]:
    """Fresh servers and connected (and joined) clients; RSS before and after connecting."""
    redis.command("FLUSHALL")
    # The load generator's processes start (and import) while the servers do.
    ports = [procs.free_port(), procs.free_port()]
    specs = build_specs(scenario, target, ports, opt, seed)
    lg = LoadGen(specs)
    try:
        servers = procs.start_servers(target, redis.url, opt.out / "logs", tag, ports=ports)
    except BaseException:
        lg.close()
        raise
    time.sleep(0.5)
    base = {s.name: s.rss() for s in servers}
    try:
        setup = lg.call("setup", timeout=600)
    except BaseException:
        lg.close()
        procs.stop_servers(servers)
        raise
    # Memory settles (and, in rooms, every MemberList has come: subscriptions are in place).
    time.sleep(2.0 if scenario == "idle" else 0.5)
    after = {s.name: s.rss() for s in servers}
    conns = sum(x["connected"] for x in setup)
    per_server = max(1, conns // 2)
    info = {
        "connected": conns,
        "connect_failed": sum(x["failed"] for x in setup),
        "connect_errors": [e for x in setup for e in x["connect_errors"]][:5],
        "batched_accepted": sum(x["batched"] for x in setup),
        "rooms_joined": sum(x["joined"] for x in setup),
        "rooms_wanted": sum(x["rooms_wanted"] for x in setup),
        "rss_base_mb": sum(base.values()) / 2**20,
        "rss_per_conn_kb": sum(after[k] - base[k] for k in base) / len(base) / per_server / 1024,
    }
    return servers, lg, specs, info


def _problems(info: dict[str, Any], m: dict[str, Any], target: procs.Target) -> list[str]:
    out = []
    if info["connect_failed"]:
        out.append(f"{info['connect_failed']} connects failed: {info['connect_errors'][:2]}")
    if target.batched and info["batched_accepted"] < info["connected"]:
        out.append(f"ndjson subprotocol accepted on {info['batched_accepted']}/{info['connected']}")
    if info["rooms_joined"] < info["rooms_wanted"]:
        out.append(f"MemberList for {info['rooms_joined']}/{info['rooms_wanted']} joins")
    if m.get("lost"):
        out.append(f"lost {m['lost']} of {m['expected']} deliveries")
    if m.get("drain_timed_out"):
        out.append("drain timed out while deliveries still arrived: 'lost' includes backlog")
    if m.get("reorders"):
        out.append(f"{m['reorders']} deliveries out of order or duplicated")
    if m.get("closed_during_run"):
        out.append(f"{m['closed_during_run']} clients closed during run, codes {m['close_codes']}")
    if m.get("errors"):
        out.append(f"{m['errors']} error envelopes/responses, e.g. {m['error_samples'][:1]}")
    return out


def run_one(
    target: procs.Target, scenario: str, redis: procs.Redis, opt: Options, rep: int
) -> dict[str, Any]:
    """One repetition of one scenario against one target; returns a flat metrics dict."""
    tag = f"{scenario}-{target.name}-r{rep}"
    t0 = time.monotonic()
    servers, lg, specs, info = _setup(target, scenario, redis, opt, tag, seed=rep)
    t1 = time.monotonic()
    probe = Probe(servers, redis, lg)
    try:
        with procs.RssSampler(servers) as sampler:
            if scenario == "idle":
                m = _idle_check(lg, specs, servers, probe, info["connected"])
            else:
                inflight = opt.inflight if opt.inflight is not None else DEFAULT_INFLIGHT[scenario]
                fan = fanout(scenario, info["connected"])
                m = _phase(
                    lg,
                    specs,
                    scenario,
                    0,
                    opt.duration,
                    opt.rate,
                    inflight,
                    fan,
                    probe,
                    opt.drain_timeout,
                )
        alive = [s.alive() for s in servers]
    finally:
        t2 = time.monotonic()
        lg.close()
        codes = procs.stop_servers(servers)
    m.update(info)
    m["wall_setup_s"], m["wall_load_s"] = t1 - t0, t2 - t1
    m["wall_stop_s"] = time.monotonic() - t2
    m["peak_rss_mb"] = max(sampler.peak.values()) / 2**20 if sampler.peak else None
    problems = _problems(info, m, target)
    if not all(alive):
        problems.append(f"server died during run (exit codes {codes})")
    problems += log_findings(servers)
    return {"target": target.name, "scenario": scenario, "rep": rep, **m, "problems": problems}


def _idle_check(
    lg: LoadGen, specs: list[SetupSpec], servers: list[procs.Server], probe: Probe, conns: int
) -> dict[str, Any]:
    """Idle connections must still be live: one GET /ping1 must reach every one of them."""
    lg.call("phase", [PhaseSpec(0, time.time(), 0.0, None, 0) for _ in specs])
    cpu0 = probe.sample()
    t0 = time.time()
    status = procs.http_get(servers[0].port, "/ping1", 10.0)
    deadline, received = time.monotonic() + 15, 0
    while time.monotonic() < deadline:
        received = sum(p["received"] for p in lg.call("poll"))
        if received >= conns:
            break
        time.sleep(0.1)
    cpu1 = probe.sample()
    results = lg.call("result")
    last_rx = max((r["last_rx"] for r in results), default=t0)
    return {
        "sent": 1,
        "expected": conns,
        "received": received,
        "lost": max(0, conns - received),
        "errors": sum(r["errors"] for r in results) + (status != 200),
        "error_samples": [f"GET /ping1 -> {status}"] if status != 200 else [],
        "closed_during_run": sum(r["closed"] for r in results),
        "close_codes": {},
        "lat_max_ms": (last_rx - t0) * 1000 if received else None,
        "server_cpu_s": cpu1["server"] - cpu0["server"],
    }


def sweep_one(
    target: procs.Target,
    scenario: str,
    redis: procs.Redis,
    opt: Options,
    start: float,
    factor: float,
    stop: float,
    p99_limit: float,
    max_fails: int = 2,
) -> list[dict[str, Any]]:
    """Raise the offered rate on one set of connections until p99 or loss breaks the limit.

    It stops after ``max_fails`` failing points in a row (one p99 spike from a neighbour's
    work on a shared machine should not end the sweep), when a client was closed (the
    connection set is no longer the same) or when a server died.
    """
    tag = f"sweep-{scenario}-{target.name}"
    servers, lg, specs, info = _setup(target, scenario, redis, opt, tag, seed=0)
    probe = Probe(servers, redis, lg)
    fan = fanout(scenario, info["connected"])
    points: list[dict[str, Any]] = []
    try:
        offered, phase, failed = start, 1, 0
        while offered <= stop:
            m = _phase(
                lg,
                specs,
                scenario,
                phase,
                opt.duration,
                offered / fan,
                0,
                fan,
                probe,
                opt.drain_timeout,
            )
            m.update(target=target.name, scenario=scenario, target_deliveries_per_s=offered)
            points.append(m)
            print(
                f"  sweep {scenario:<9} {target.name:<20} offered {offered:>9,.0f}/s "
                f"got {m['deliveries_per_s']:>9,.0f}/s  p99 {m['lat_p99_ms'] or 0:7.1f} ms  "
                f"lost {m['lost']}",
                flush=True,
            )
            if not all(s.alive() for s in servers) or m["closed_during_run"]:
                break
            failed = failed + 1 if m["lost"] or (m["lat_p99_ms"] or 0) >= p99_limit else 0
            if failed >= max_fails:
                break
            offered *= factor
            phase += 1
            time.sleep(1.0)
    finally:
        lg.close()
        procs.stop_servers(servers)
    return points
