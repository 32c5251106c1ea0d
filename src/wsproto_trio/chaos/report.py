"""What a chaos run measured, computed from its records after the run. No I/O but
``write_json`` and ``draw_timeline``.

Definitions (docs/chaos.md explains the choices):
- a message is *accepted* when its sender received it back (its echo): the server
  took it and gave it a position. A send that fails, or whose echo never comes,
  is not accepted and expects nothing;
- every client is subscribed to the chat and its rooms from before the first
  message to the end (the client library keeps the subscriptions across
  reconnects), so an accepted message is *expected* once at every client of its
  stream, except where that client was told it may be missing: a ``Lost`` event
  (a server notice, or a failed recovery) covers the messages of the stream
  after the client's position then (its last delivery or notice) and up to the
  position it names, that it had not received.
  Covered messages that never arrive are counted apart (``announced_lost``);
  covered messages that do arrive still count as expected and delivered;
- *delivered*: expected deliveries made; a *duplicate* is a second delivery of
  one message to one client; a *reordering* is a delivery whose offset is below
  the previous one's in the same epoch of the same stream at the same client.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .schedule import Fault


@dataclass(frozen=True, slots=True)
class Sent:
    msg_id: str
    sender: int
    stream: str  # "chat" or "room:<name>"
    at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    seq: int  # global arrival order
    at: float
    client: int
    stream: str
    msg_id: str
    epoch: str | None
    offset: int | None


@dataclass(frozen=True, slots=True)
class LostNotice:
    seq: int
    at: float
    client: int
    stream: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Recovery:
    at: float
    client: int
    down_for: float
    recovered: bool
    replayed: int


@dataclass(slots=True)
class Records:
    """Everything the run saw; times are seconds from the start of publishing."""

    subscriptions: dict[int, set[str]] = field(default_factory=dict)
    sent: dict[str, Sent] = field(default_factory=dict)
    send_failures: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    losts: list[LostNotice] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    disconnects: int = 0
    faults: list[Fault] = field(default_factory=list)
    ghost_presence_s: float | None = None
    server_rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    recovery: bool
    seconds: float
    servers: int
    clients: int
    rooms: int
    rate: float
    sent: int
    send_failures: int
    accepted: int
    expected: int
    delivered: int
    ratio: float  # percent
    duplicates: int
    reordered: int
    lost_notices: int
    announced_lost: int
    disconnects: int
    recoveries: int
    unrecovered: int
    worst_recovery_s: float | None
    ghost_presence_s: float | None
    server_rss_mb: dict[str, dict[str, float]]
    faults: list[dict[str, Any]]
    missing_sample: list[str]
    interrupted: bool = False

    def last_line(self) -> str:
        return (
            f"chaos: delivered {self.delivered}/{self.expected} ({self.ratio:.2f}%), "
            f"duplicates {self.duplicates}, reordered {self.reordered}"
        )


def _epoch_ranks(records: Records) -> dict[tuple[str, str], int]:
    """Epochs of each stream numbered in the order the run first saw them."""
    ranks: dict[tuple[str, str], int] = {}
    events: list[tuple[int, str, str | None]] = [
        (d.seq, d.stream, d.epoch) for d in records.deliveries
    ]
    events += [(n.seq, n.stream, n.epoch) for n in records.losts]
    for _, stream, epoch in sorted(events, key=lambda e: e[0]):
        if epoch is not None and (stream, epoch) not in ranks:
            ranks[(stream, epoch)] = sum(1 for s, _ in ranks if s == stream)
    return ranks


def compute(
    records: Records,
    *,
    recovery: bool,
    seconds: float,
    servers: int,
    clients: int,
    rooms: int,
    rate: float,
) -> Report:
    # Accepted: the sender's own delivery gives the message its position.
    positions: dict[str, tuple[str | None, int | None]] = {}
    for d in records.deliveries:
        sent = records.sent.get(d.msg_id)
        if sent is not None and sent.sender == d.client and d.msg_id not in positions:
            positions[d.msg_id] = (d.epoch, d.offset)
    accepted_by_stream: dict[str, list[str]] = defaultdict(list)
    for msg_id in positions:
        accepted_by_stream[records.sent[msg_id].stream].append(msg_id)
    ranks = _epoch_ranks(records)

    def rank(stream: str, epoch: str | None, offset: int | None) -> tuple[int, int]:
        return (ranks.get((stream, epoch or ""), -1), offset or 0)

    timeline: dict[int, list[Delivery | LostNotice]] = defaultdict(list)
    for d in records.deliveries:
        timeline[d.client].append(d)
    for n in records.losts:
        timeline[n.client].append(n)

    expected = delivered = duplicates = reordered = announced = 0
    missing: list[str] = []
    for client, streams in sorted(records.subscriptions.items()):
        events = sorted(timeline[client], key=lambda e: e.seq)
        for stream in sorted(streams):
            accepted = accepted_by_stream.get(stream, [])
            got: set[str] = set()
            covered: set[str] = set()
            last: tuple[str | None, int] | None = None
            reached = (-1, 0)  # the stream's position at this client: last delivery or notice
            for event in events:
                if event.stream != stream:
                    continue
                if isinstance(event, Delivery):
                    if event.msg_id not in records.sent:
                        continue
                    if event.msg_id in got:
                        duplicates += 1
                        continue
                    got.add(event.msg_id)
                    if event.offset is not None:
                        if last is not None and last[0] == event.epoch and event.offset < last[1]:
                            reordered += 1
                        last = (event.epoch, event.offset)
                        reached = max(reached, rank(stream, event.epoch, event.offset))
                    continue
                # A notice announces the gap from where the client was to what it names.
                limit = rank(stream, event.epoch, event.offset)
                for msg_id in accepted:
                    where = rank(stream, *positions[msg_id])
                    if msg_id not in got and reached < where <= limit:
                        covered.add(msg_id)
                reached = max(reached, limit)
            for msg_id in accepted:
                if msg_id in got:
                    expected += 1
                    delivered += 1
                elif msg_id in covered:
                    announced += 1
                else:
                    expected += 1
                    if len(missing) < 20:
                        missing.append(f"client {client} {stream} {msg_id}")
    worst = max((r.down_for for r in records.recoveries), default=None)
    return Report(
        recovery=recovery,
        seconds=seconds,
        servers=servers,
        clients=clients,
        rooms=rooms,
        rate=rate,
        sent=len(records.sent),
        send_failures=records.send_failures,
        accepted=len(positions),
        expected=expected,
        delivered=delivered,
        ratio=100.0 * delivered / expected if expected else 100.0,
        duplicates=duplicates,
        reordered=reordered,
        lost_notices=len(records.losts),
        announced_lost=announced,
        disconnects=records.disconnects,
        recoveries=len(records.recoveries),
        unrecovered=sum(1 for r in records.recoveries if not r.recovered),
        worst_recovery_s=worst,
        ghost_presence_s=records.ghost_presence_s,
        server_rss_mb=records.server_rss_mb,
        faults=[
            {"fault": f.label, "at": round(f.at, 2), "duration": f.duration} for f in records.faults
        ],
        missing_sample=missing,
        interrupted=records.interrupted,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def table(report: Report) -> str:
    """The report as a two-column text table (the last line is not part of it)."""
    rss = ", ".join(
        f"{name} {v['rss']:.0f} (peak {v['peak']:.0f})"
        for name, v in sorted(report.server_rss_mb.items())
    )
    rows = [
        ("messages sent", f"{report.sent} ({report.send_failures} sends failed)"),
        ("messages accepted (echoed to sender)", str(report.accepted)),
        ("deliveries expected", str(report.expected)),
        ("deliveries made", str(report.delivered)),
        ("delivery ratio", f"{report.ratio:.2f} %"),
        ("duplicates", str(report.duplicates)),
        ("reorderings", str(report.reordered)),
        (
            "Lost notices",
            f"{report.lost_notices} ({report.announced_lost} deliveries announced lost)",
        ),
        ("disconnections", str(report.disconnects)),
        ("recoveries", f"{report.recoveries} ({report.unrecovered} not recovered)"),
        ("worst recovery time", _seconds(report.worst_recovery_s)),
        ("ghost presence after the crash", _seconds(report.ghost_presence_s)),
        ("server RSS, MB", rss or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    head = (
        f"chaos run: {report.seconds:g} s, {report.servers} servers, {report.clients} clients, "
        f"{report.rooms} rooms, {report.rate:g} msg/s, recovery "
        + ("on" if report.recovery else "off")
        + (" (INTERRUPTED: partial figures)" if report.interrupted else "")
    )
    faults = "faults: " + "; ".join(f"{f['fault']} at {f['at']:g} s" for f in report.faults)
    lines = [head, faults, ""] + [f"  {name:<{width}}  {value}" for name, value in rows]
    if report.missing_sample:
        lines += ["", "  first missing deliveries: " + ", ".join(report.missing_sample[:5])]
    return "\n".join(lines)


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def per_second(records: Records, seconds: float) -> tuple[list[int], list[int], list[int]]:
    """Deliveries made, messages sent, and sends accepted per second of the run."""
    size = int(seconds) + 1
    made = [0] * size
    sent = [0] * size
    accepted = [0] * size
    for d in records.deliveries:
        if 0 <= d.at < size:
            made[int(d.at)] += 1
    echoes: set[str] = set()
    for d in records.deliveries:
        message = records.sent.get(d.msg_id)
        if message is not None and message.sender == d.client and d.msg_id not in echoes:
            echoes.add(d.msg_id)
            if 0 <= message.at < size:
                accepted[int(message.at)] += 1
    for message in records.sent.values():
        if 0 <= message.at < size:
            sent[int(message.at)] += 1
    return made, sent, accepted


def draw_timeline(records: Records, report: Report, path: Path) -> bool:
    """The run as a PNG: deliveries per second with the faults marked. False when
    matplotlib (the ``chaos`` extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    made, sent, accepted = per_second(records, report.seconds + 15)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(range(len(made)), made, color="#2557d6", label="deliveries made / s")
    top.set_ylabel("deliveries / s")
    bottom.plot(range(len(sent)), sent, color="#6b7280", label="sent / s")
    bottom.plot(range(len(accepted)), accepted, color="#067647", label="accepted / s")
    bottom.set_ylabel("messages / s")
    bottom.set_xlabel("seconds")
    colours = {
        "cut_clients": "#f59e0b",
        "kill_server": "#b42318",
        "cut_redis_link": "#7c3aed",
        "restart_redis": "#0e7490",
    }
    seen: set[str] = set()
    for fault in records.faults:
        label = fault.label if fault.kind not in seen else None
        seen.add(fault.kind)
        for axis in (top, bottom):
            axis.axvspan(
                fault.at,
                fault.at + max(fault.duration, 0.3),
                color=colours[fault.kind],
                alpha=0.25,
                label=label if axis is top else None,
            )
    top.legend(loc="upper right", fontsize=8)
    bottom.legend(loc="upper right", fontsize=8)
    top.set_title(report.last_line() + (" — recovery on" if report.recovery else " — recovery off"))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
