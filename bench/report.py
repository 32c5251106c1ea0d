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
    ("envelopes_per_frame", "env/frm", "{:.1f}"),
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

    Also ``ours-w2`` over ``ours`` (Hypercorn with two workers against one server process).
    """
    out = []
    for scenario, by_target in summary.items():
        metric = RATIO_METRIC.get(scenario, "deliveries_per_s")
        for ours in (t for t in by_target if t.startswith("ours") and "-w2" not in t):
            for ceiling in (t for t in by_target if t.startswith("ceiling")):
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
