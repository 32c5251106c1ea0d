"""Benchmark wsproto_trio against two ceilings: one command, its own Redis, a table and JSON.

    .venv/bin/python bench/run.py --scenarios broadcast,rooms,idle,ping \
        --targets ours,ours-batched,ceiling-asgi,ceiling-websockets \
        --clients 200 --duration 10 --repeat 3 [--sweep] --out bench/results

Targets run interleaved within each repetition (forward order, then reversed, ...) so that
drift in a noisy machine's background load spreads over all of them; the table shows medians.
See bench/README.md for what every number means.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs, report  # noqa: E402
from bench.scenarios import Options, fanout, run_one, sweep_one  # noqa: E402

SCENARIOS = ("broadcast", "rooms", "idle", "ping")
DEFAULT_TARGETS = (
    "ours",
    "ours-batched",
    "ours-h0",
    "ours-batched-h0",
    "ceiling-asgi",
    "ceiling-asgi-batched",
    "ceiling-websockets",
)
SWEEPABLE = ("broadcast", "rooms", "ping")
HALF_SCENARIOS = ("broadcast", "rooms")
# --quick: issue 10's sizes, a few minutes on 2 cores (see bench/README.md).
QUICK = {
    "scenarios": "broadcast,rooms,idle",
    "clients": 100,
    "rooms": 100,
    "duration": 3.0,
    "repeat": 3,
    "idle_per_server": 2000,
    "idle_repeat": 1,
    "half": True,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="issue 10's quick sizes: broadcast,rooms,idle; 100 clients; 100 rooms x 4; "
        "3 s x 3 repetitions; 2,000 idle per server; p99 at half of saturation",
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help=f"of {sorted(procs.TARGETS)}"
    )
    p.add_argument(
        "--clients", type=int, default=200, help="websocket clients, split across 2 servers"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of offered load per run")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--loadgen-procs", type=int, default=2, help="load generator processes")
    p.add_argument("--senders", type=int, default=4, help="broadcast: clients that publish")
    p.add_argument("--rooms", type=int, default=500, help="rooms: rooms of 4 members each")
    p.add_argument("--idle-per-server", type=int, default=5000, help="idle: connections per server")
    p.add_argument(
        "--idle-repeat", type=int, help="repetitions of idle (default: --repeat; --quick: 1)"
    )
    p.add_argument(
        "--inflight", type=int, help="closed loop: messages outstanding (default per scenario)"
    )
    p.add_argument(
        "--rate", type=float, help="open loop: offered messages/s instead of closed loop"
    )
    p.add_argument("--ping-streams", type=int, default=4, help="ping: GET streams per server")
    p.add_argument("--pad", type=int, default=64, help="extra bytes of text per message")
    p.add_argument("--sweep", action="store_true", help="also sweep offered rate per target")
    p.add_argument("--sweep-start", type=float, default=5000, help="first offered deliveries/s")
    p.add_argument("--sweep-factor", type=float, default=1.5)
    p.add_argument("--sweep-max", type=float, default=300000)
    p.add_argument("--sweep-fails", type=int, default=2, help="stop after N failing points")
    p.add_argument("--p99-limit", type=float, default=100.0, help="ms; saturation criterion")
    p.add_argument(
        "--cluster-masters", type=int, default=0,
        help="add targets ours-cluster[-batched] on a Redis Cluster of N masters",
    )  # fmt: skip
    p.add_argument(
        "--half",
        action="store_true",
        help="after the repetitions, an open-loop run of broadcast and rooms at half of each "
        "target's median closed-loop deliveries/s (its saturation), for p99",
    )
    p.add_argument(
        "--half-targets",
        default="ours",
        help="targets of the --half runs: 'ours' (every target of ours in the run), 'all', "
        "or a comma-separated list",
    )
    p.add_argument("--half-repeat", type=int, default=1, help="repetitions of each --half run")
    p.add_argument(
        "--baseline-src",
        type=Path,
        help="a src/ directory of other code (e.g. `git archive` of an older commit): every "
        "target of ours gets a twin '<target>@base' running that code, interleaved with it",
    )
    p.add_argument(
        "--src",
        type=Path,
        help="run ours from this src/ directory (PYTHONPATH) instead of the checkout's, e.g. "
        "a snapshot, so that editing the code does not change a run in progress",
    )
    p.add_argument(
        "--log-level",
        help="LOG_LEVEL for our servers (default: the server's own, INFO, which logs every "
        "inbound message as the prototype did)",
    )
    args = p.parse_args(argv)
    if args.quick:
        defaults = p.parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    return args


def order_for(rep: int, targets: list[str]) -> list[str]:
    """Forward on even repetitions, reversed on odd ones: ABCD DCBA ABCD."""
    return targets if rep % 2 == 0 else targets[::-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    targets = [t for t in args.targets.split(",") if t]
    if args.cluster_masters:
        from bench import cluster_bench

        cluster_bench.register(args.cluster_masters)
    for name in scenarios:
        if name not in SCENARIOS:
            sys.exit(f"unknown scenario {name!r}; choose from {SCENARIOS}")
    if args.src is not None:
        for name, target in list(procs.TARGETS.items()):
            if target.ours:
                procs.TARGETS[name] = dataclasses.replace(target, src=str(args.src.resolve()))
    if args.baseline_src is not None:
        src = str(args.baseline_src.resolve())
        for name in [t for t in targets if procs.TARGETS.get(t) and procs.TARGETS[t].ours]:
            twin = dataclasses.replace(procs.TARGETS[name], name=f"{name}@base", src=src)
            procs.TARGETS[twin.name] = twin
            targets.insert(targets.index(name) + 1, twin.name)
    for name in targets:
        if name not in procs.TARGETS:
            sys.exit(f"unknown target {name!r}; choose from {sorted(procs.TARGETS)}")
    out: Path = args.out if args.out.is_absolute() else Path.cwd() / args.out
    fd_limit = procs.raise_fd_limit()
    need = args.idle_per_server * 2 + 100
    if "idle" in scenarios and fd_limit < need:
        print(f"warning: open-files limit {fd_limit} < {need}; idle connections may fail")
    opt = Options(
        clients=args.clients,
        duration=args.duration,
        loadgen_procs=args.loadgen_procs,
        senders=args.senders,
        rooms=args.rooms,
        idle_per_server=args.idle_per_server,
        inflight=args.inflight,
        rate=args.rate,
        pad=args.pad,
        ping_streams=args.ping_streams,
        out=out,
    )
    if args.log_level:
        procs.OURS_ENV["LOG_LEVEL"] = args.log_level
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    redis = procs.Redis.start(out / "logs")
    runs: list[dict[str, Any]] = []
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.monotonic()
    idle_reps = args.repeat if args.idle_repeat is None else args.idle_repeat
    try:
        for rep in range(args.repeat):
            for scenario in scenarios:
                for name in order_for(rep, targets):
                    if scenario == "idle" and (idle_twin(name, targets) or rep >= idle_reps):
                        continue
                    print(f"[rep {rep + 1}/{args.repeat}] {scenario:<9} {name} ...", flush=True)
                    try:
                        r = run_one(procs.TARGETS[name], scenario, redis, opt, rep)
                    except Exception as exc:  # a target that cannot start must not stop the rest
                        r = {
                            "target": name,
                            "scenario": scenario,
                            "rep": rep,
                            "problems": [repr(exc)],
                        }
                    runs.append(r)
                    print("    " + one_line(r), flush=True)
        if args.half:
            runs += half_runs(args, scenarios, targets, runs, redis, opt)
        if args.sweep:
            for scenario in (s for s in scenarios if s in SWEEPABLE):
                for name in targets:
                    try:
                        points = sweep_one(
                            procs.TARGETS[name],
                            scenario,
                            redis,
                            opt,
                            args.sweep_start,
                            args.sweep_factor,
                            args.sweep_max,
                            args.p99_limit,
                            args.sweep_fails,
                        )
                    except Exception as exc:
                        print(f"  sweep {scenario} {name} failed: {exc!r}")
                        points = []
                    sweeps.setdefault(scenario, {})[name] = points
    finally:
        redis.stop()
        procs.stop_all()
        if args.cluster_masters:
            cluster_bench.stop()

    summary = report.summarize(runs)
    ratio_rows = report.ratios(summary)
    print()
    print(report.table(summary))
    print()
    print("ratios (ours / ceiling, medians):")
    print(report.ratio_lines(ratio_rows) or "  (need ours and a ceiling in the same run)")
    if args.baseline_src is not None:
        print("\nafter / before (this code / --baseline-src, medians):")
        print(report.baseline_lines(summary))
    print()
    print("issue 10 table (medians; markdown):")
    print(report.issue_table(summary))
    print()
    print("issue 10 targets:")
    print(report.target_lines(summary))
    trouble = report.problems(summary)
    if trouble:
        print("\nproblems seen (any repetition):\n" + trouble)
    saturation: dict[str, dict[str, Any]] = {}
    if sweeps:
        print(
            f"\nsaturation (highest offered deliveries/s with p99 < {args.p99_limit:.0f} ms"
            " and no loss):"
        )
        for scenario, by_target in sweeps.items():
            for name, points in by_target.items():
                sat = report.saturation(points, args.p99_limit)
                saturation.setdefault(scenario, {})[name] = (
                    sat["offered_deliveries_per_s"] if sat else None
                )
                shown = f"{sat['offered_deliveries_per_s']:,.0f}/s" if sat else "none"
                print(f"  {scenario:<10} {name:<20} {shown}")
        png = out / f"sweep-{stamp}.png"
        report.plot_sweep(sweeps, png, args.p99_limit)
        print(f"plot: {png}")
    path = out / f"bench-{stamp}.json"
    report.write_json(
        path,
        {
            "argv": sys.argv,
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version,
            },
            "wall_s": time.monotonic() - started,
            "summary": summary,
            "ratios": ratio_rows,
            "saturation": saturation,
            "sweeps": sweeps,
            "runs": runs,
        },
    )
    print(f"json: {path}")
    return 0


def idle_twin(name: str, targets: list[str]) -> str | None:
    """The one-envelope-per-frame twin of a batched target, when it runs too.

    An idle connection receives nothing to batch, so idle runs the twin only and the
    report shows its figure for both.
    """
    twin = name.replace("-batched", "")
    return twin if twin != name and twin in targets else None


def half_runs(
    args: argparse.Namespace,
    scenarios: list[str],
    targets: list[str],
    runs: list[dict[str, Any]],
    redis: procs.Redis,
    opt: Options,
) -> list[dict[str, Any]]:
    """Open loop at half of each target's saturation (its median closed-loop deliveries/s).

    Recorded as scenario ``<scenario>@50%``; the latency columns of those rows are service
    latency at a load the target sustains, not the queueing delay of a closed loop.
    """
    if args.half_targets == "ours":
        chosen = [t for t in targets if procs.TARGETS[t].ours]
    elif args.half_targets == "all":
        chosen = list(targets)
    else:
        chosen = [t for t in args.half_targets.split(",") if t in targets]
    summary = report.summarize(runs)
    out: list[dict[str, Any]] = []
    for rep in range(args.half_repeat):
        for scenario in (s for s in HALF_SCENARIOS if s in scenarios):
            for name in order_for(rep, chosen):
                m = summary.get(scenario, {}).get(name, {})
                saturated, connected = m.get("deliveries_per_s"), m.get("connected")
                if not saturated or not connected:
                    continue
                fan = fanout(scenario, int(connected))
                half = dataclasses.replace(opt, rate=saturated / 2 / fan)
                label = f"{scenario}@50%"
                print(
                    f"[half {rep + 1}/{args.half_repeat}] {label:<13} {name} at "
                    f"{saturated / 2:,.0f} deliveries/s ...",
                    flush=True,
                )
                try:
                    r = run_one(procs.TARGETS[name], scenario, redis, half, 100 + rep)
                except Exception as exc:
                    r = {"target": name, "rep": rep, "problems": [repr(exc)]}
                r["scenario"] = label
                r["saturation_deliveries_per_s"] = saturated
                out.append(r)
                print("    " + one_line(r), flush=True)
    return out


def one_line(r: dict[str, Any]) -> str:
    """Progress line for one run, so a long bench shows where it is."""
    if "deliveries_per_s" not in r and "rss_per_conn_kb" not in r:
        return f"FAILED: {r.get('problems')}"
    if r["scenario"] == "idle":
        return (
            f"{r.get('connected')} idle connections, {r.get('rss_per_conn_kb') or 0:.1f} KB/conn, "
            f"peak {r.get('peak_rss_mb') or 0:.0f} MB, ping reached {r.get('received')}"
            + (f", problems: {r['problems']}" if r.get("problems") else "")
        )
    parts = [
        f"{r.get('deliveries_per_s') or 0:,.0f} deliv/s",
        f"p99 {r.get('lat_p99_ms') or 0:.1f} ms",
        f"lost {r.get('lost', 0)}",
        f"{r.get('server_cpu_us_per_delivery') or 0:.1f} us/deliv",
        f"{r.get('rss_per_conn_kb') or 0:.1f} KB/conn",
        f"lg {r.get('loadgen_cpu_share') or 0:.0%}",
    ]
    parts.append(
        f"wall {r.get('wall_setup_s', 0):.1f}+{r.get('wall_load_s', 0):.1f}"
        f"+{r.get('wall_stop_s', 0):.1f} s"
    )
    if r.get("problems"):
        parts.append(f"problems: {r['problems']}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
