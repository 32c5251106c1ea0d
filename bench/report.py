"""Turning raw runs into what one reads: medians, the table, ratios to the ceilings, JSON, plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# (key, header, format) in table order; None values print as "-".
COLUMNS: list[tuple[str, str, str]] = [
    ("deliveries_per_s", "deliv/s", "{:,.0f}"),
    ("offered_msgs_per_s", "msgs/s", "{:,.0f}"),
    ("lat_p50_ms", "p50 ms", "{:.1f}"),
    ("lat_p99_ms", "p99 ms", "{:.1f}"),
    ("lat_max_ms", "max ms", "{:.0f}"),
    ("lost", "lost", "{:,.0f}"),
    ("reorders", "reord", "{:,.0f}"),
    ("envelopes_per_frame", "env/frm", "{:.2f}"),
    ("server_cpu_us_per_delivery", "us/deliv", "{:.1f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("rss_per_conn_kb", "KB/conn", "{:.1f}"),
    ("loadgen_cpu_share", "lg CPU", "{:.0%}"),
    ("background_cpu", "bg cores", "{:.2f}"),
    ("errors", "errs", "{:,.0f}"),
]

# The ratio that answers "how close are we": throughput for traffic scenarios, memory for idle.
RATIO_METRIC = {
    "broadcast": "deliveries_per_s",
    "rooms": "deliveries_per_s",
    "ping": "deliveries_per_s",
    "idle": "rss_per_conn_kb",
}


def percentiles(lat_ms: np.ndarray) -> dict[str, float | None]:
    if lat_ms.size == 0:
        return {"lat_p50_ms": None, "lat_p99_ms": None, "lat_max_ms": None}
    p50, p99 = np.percentile(lat_ms, [50, 99])
    return {"lat_p50_ms": float(p50), "lat_p99_ms": float(p99), "lat_max_ms": float(lat_ms.max())}


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric metric over repetitions; the repetition count alongside."""
    out: dict[str, Any] = {"repeats": len(runs)}
    keys = {k for r in runs for k, v in r.items() if isinstance(v, int | float)}
    for k in sorted(keys):
        vals = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        out[k] = statistics.median(vals) if vals else None
    out["problems"] = sorted({p for r in runs for p in r.get("problems", [])})
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{scenario: {target: medians}} keeping the order in which they first ran."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        grouped.setdefault(r["scenario"], {}).setdefault(r["target"], []).append(r)
    return {s: {t: median_runs(rs) for t, rs in ts.items()} for s, ts in grouped.items()}


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Ours (each mode) over each ceiling, per scenario, on that scenario's headline metric.

    The stack ceiling is compared in the same mode (batched with batched); the Python
    ceiling, which has one envelope per frame only, with both.

    Also ``ours-w2`` over ``ours`` (Hypercorn with two workers against one server process).
    """
    out = []
    for scenario, by_target in summary.items():
        metric = RATIO_METRIC.get(scenario, "deliveries_per_s")
        for ours in (t for t in by_target if t.startswith("ours") and "-w2" not in t):
            for ceiling in (t for t in by_target if t.startswith("ceiling")):
                if ceiling.startswith("ceiling-asgi") and ("batched" in ceiling) != (
                    "batched" in ours
                ):
                    continue  # the stack ceiling is compared in the same framing mode
                a, b = by_target[ours].get(metric), by_target[ceiling].get(metric)
                if a and b:
                    out.append(
                        {
                            "scenario": scenario,
                            "ours": ours,
                            "ceiling": ceiling,
                            "metric": metric,
                            "ratio": a / b,
                        }
                    )
        for multi in (t for t in by_target if "-w2" in t):
            base = multi.replace("-w2", "")
            a, b = by_target[multi].get(metric), by_target.get(base, {}).get(metric)
            if a and b:
                out.append(
                    {
                        "scenario": scenario,
                        "ours": multi,
                        "ceiling": base,
                        "metric": metric,
                        "ratio": a / b,
                    }
                )
    return out


# The rows of issue 10's table, in its order, with the names it uses.
SYSTEMS: list[tuple[str, str]] = [
    ("ceiling-websockets", "websockets + redis.asyncio (Python ceiling)"),
    ("ceiling-asgi-batched", "raw ASGI under Hypercorn trio, batched (stack ceiling)"),
    ("ceiling-asgi", "raw ASGI under Hypercorn trio, one per frame (stack ceiling)"),
    ("ours-batched", "**wsproto_trio, batched**, history on"),
    ("ours", "**wsproto_trio**, history on"),
    ("ours-batched-h0", "wsproto_trio, batched, HISTORY_SIZE=0"),
    ("ours-h0", "wsproto_trio, HISTORY_SIZE=0"),
    ("ours-w2-batched", "wsproto_trio, batched, hypercorn -w 2"),
    ("ours-w2", "wsproto_trio, hypercorn -w 2"),
]


def _get(
    summary: dict[str, dict[str, dict[str, Any]]], scenario: str, target: str, key: str
) -> Any:
    return summary.get(scenario, {}).get(target, {}).get(key)


def issue_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Issue 10's table as markdown: one row per system that ran, medians of one run."""
    cols: list[tuple[str, str, str, str]] = [
        ("broadcast deliv/s", "broadcast", "deliveries_per_s", "{:,.0f}"),
        ("env/frame", "broadcast", "envelopes_per_frame", "{:.2f}"),
        ("us/deliv", "broadcast", "server_cpu_us_per_delivery", "{:.1f}"),
        ("rooms deliv/s", "rooms", "deliveries_per_s", "{:,.0f}"),
        ("env/frame", "rooms", "envelopes_per_frame", "{:.2f}"),
        ("us/deliv (rooms)", "rooms", "server_cpu_us_per_delivery", "{:.1f}"),
        ("KB per idle conn", "idle", "rss_per_conn_kb", "{:.1f}"),
        ("p99 ms @50% broadcast", "broadcast@50%", "lat_p99_ms", "{:.1f}"),
        ("p99 ms @50% rooms", "rooms@50%", "lat_p99_ms", "{:.1f}"),
    ]
    ran = {t for by_target in summary.values() for t in by_target}
    lines = [
        "| system | " + " | ".join(c[0] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    labels = dict(SYSTEMS)
    order = [t for t, _ in SYSTEMS] + sorted(ran - labels.keys())
    for target in order:
        if target not in ran:
            continue
        label = labels.get(target) or f"{labels.get(target.split('@')[0], target)} ({target})"
        cells = [_fmt(_get(summary, sc, target, key), f) for _, sc, key, f in cols]
        if _get(summary, "idle", target, "rss_per_conn_kb") is None:
            # bench/run.py runs idle for one framing mode only (nothing to batch).
            twin = _get(summary, "idle", target.replace("-batched", ""), "rss_per_conn_kb")
            cells[6] = _fmt(twin, "{:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(value: float | None, ok: bool, text: str) -> str:
    if value is None:
        return f"  -    {text}: not measured"
    return f"  {'met ' if ok else 'MISS'} {text}"


def target_lines(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Each target of issue 10, for history on (ours) and HISTORY_SIZE=0 (ours-*-h0)."""

    def ratio(scenario: str, a: str, b: str, key: str = "deliveries_per_s") -> float | None:
        x, y = _get(summary, scenario, a, key), _get(summary, scenario, b, key)
        return x / y if x and y else None

    lines = []
    for suffix, what in (("", "history on"), ("-h0", "HISTORY_SIZE=0")):
        one, batched = f"ours{suffix}", f"ours-batched{suffix}"
        if not any(t in by for by in summary.values() for t in (one, batched)):
            continue
        lines.append(f" {what}:")
        checks: list[tuple[float | None, float, str]] = [
            (ratio("broadcast", batched, "ceiling-asgi-batched"), 0.9,
             "batched broadcast >= 0.9x batched stack ceiling"),
            (ratio("broadcast", batched, "ceiling-websockets"), 0.85,
             "batched broadcast >= 0.85x Python ceiling"),
            (ratio("broadcast", batched, "ceiling-asgi-batched", "envelopes_per_frame"), 0.8,
             "batched broadcast envelopes/frame within 20% of the batched stack ceiling's"),
            (ratio("broadcast", one, "ceiling-asgi"), 0.95,
             "broadcast >= 0.95x stack ceiling"),
            (ratio("rooms", one, "ceiling-asgi"), 0.9, "rooms >= 0.9x stack ceiling"),
            (ratio("rooms", batched, "ceiling-asgi-batched"), 0.9,
             "batched rooms >= 0.9x batched stack ceiling"),
        ]  # fmt: skip
        for value, floor, text in checks:
            shown = f"{text}: {value:.2f}x" if value is not None else text
            lines.append(_verdict(value, value is not None and value >= floor, shown))
        for target in (one, batched):
            kb = _get(summary, "idle", target, "rss_per_conn_kb") or _get(
                summary, "idle", target.replace("-batched", ""), "rss_per_conn_kb"
            )
            shown = f"{target}: <= 34 KB per idle connection: {kb:.1f} KB" if kb else target
            lines.append(_verdict(kb, kb is not None and kb <= 34.0, shown))
            for scenario in ("broadcast@50%", "rooms@50%"):
                p99 = _get(summary, scenario, target, "lat_p99_ms")
                sat = _get(summary, scenario, target, "saturation_deliveries_per_s")
                shown = f"{target}: {scenario} p99 < 50 ms"
                if p99 is not None:
                    shown += f": {p99:.1f} ms at {sat / 2:,.0f} deliveries/s"
                lines.append(_verdict(p99, p99 is not None and p99 < 50.0, shown))
        bad = [
            f"{sc}/{t}"
            for sc, by_target in summary.items()
            for t in (one, batched)
            for p in by_target.get(t, {}).get("problems", [])
            if p.startswith("lost") or "out of order" in p
        ]
        lines.append(
            _verdict(0.0, not bad, "no message lost or reordered" + (f": {bad}" if bad else ""))
        )
    return "\n".join(lines)


def baseline_lines(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Each target of ours against its '@base' twin: throughput, CPU, frames, memory, p99."""
    keys = [
        ("deliveries_per_s", "deliv/s"),
        ("server_cpu_us_per_delivery", "us/deliv"),
        ("envelopes_per_frame", "env/frame"),
        ("rss_per_conn_kb", "KB/conn"),
        ("lat_p99_ms", "p99"),
    ]
    lines = []
    for scenario, by_target in summary.items():
        for target, m in by_target.items():
            base = by_target.get(f"{target}@base")
            if base is None:
                continue
            parts = []
            for key, label in keys:
                a, b = m.get(key), base.get(key)
                if a and b:
                    parts.append(f"{label} {a / b:.2f}x")
            lines.append(f"{scenario:<14} {target:<16} " + ", ".join(parts))
    return "\n".join(lines)


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A fixed-width text table, one row per scenario and target."""
    header = ["scenario", "target", *(h for _, h, _ in COLUMNS)]
    rows = [header]
    for scenario, by_target in summary.items():
        for target, m in by_target.items():
            rows.append([scenario, target, *(_fmt(m.get(k), f) for k, _, f in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio_lines(rs: Iterable[dict[str, Any]]) -> str:
    lines = []
    for r in rs:
        idle = r["metric"] == "rss_per_conn_kb"
        what = "KB per idle connection, lower is better" if idle else "deliveries/s"
        lines.append(
            f"{r['scenario']:<10} {r['ours']:<13} / {r['ceiling']:<20} = {r['ratio']:.2f}x ({what})"
        )
    return "\n".join(lines)


def problems(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for scenario, by_target in summary.items():
        for target, m in by_target.items():
            for p in m.get("problems", []):
                lines.append(f"{scenario}/{target}: {p}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def saturation(points: list[dict[str, Any]], p99_limit_ms: float) -> dict[str, Any] | None:
    """Highest offered rate whose p99 stayed under the limit with nothing lost."""
    ok = [
        p
        for p in points
        if p.get("lost", 1) == 0
        and p.get("lat_p99_ms") is not None
        and p["lat_p99_ms"] < p99_limit_ms
    ]
    return max(ok, key=lambda p: p["offered_deliveries_per_s"]) if ok else None


def plot_sweep(
    sweeps: dict[str, dict[str, list[dict[str, Any]]]], path: Path, limit: float
) -> None:
    """p99 latency against offered deliveries/s, one panel per scenario, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(sweeps)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for target, points in sweeps[scenario].items():
            xs = [p["offered_deliveries_per_s"] for p in points if p.get("lat_p99_ms") is not None]
            ys = [p["lat_p99_ms"] for p in points if p.get("lat_p99_ms") is not None]
            lost = [p.get("lost", 0) > 0 for p in points if p.get("lat_p99_ms") is not None]
            (line,) = ax.plot(xs, ys, marker="o", label=target)
            for x, y, bad in zip(xs, ys, lost, strict=True):
                if bad:
                    ax.plot([x], [y], marker="x", color=line.get_color(), markersize=12)
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{scenario}: p99 vs offered load (x = loss)")
        ax.set_xlabel("offered deliveries/s")
        ax.set_ylabel("p99 latency, ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
