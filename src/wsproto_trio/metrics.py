"""Prometheus metrics, one registry per app so several servers can share a process.

Counters are bumped once per fan-out with the number of recipients, never once
per recipient, to keep the hot loop free of locks.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Live(Collector):
    """Gauges read at scrape time from the live state, so they cannot drift."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        values = self._read()
        docs = {
            "wsproto_connections": "Open websocket connections on this server",
            "wsproto_rooms": "Rooms with at least one member on this server",
            "wsproto_room_members": "Room memberships held by this server's connections",
            "wsproto_broker_up": "1 when the broker is reachable, else 0",
            "wsproto_broker_reconnects_total": "Times the broker connection was re-established",
        }
        families: list[GaugeMetricFamily | CounterMetricFamily] = [
            GaugeMetricFamily(name, doc, value=values[name])
            for name, doc in docs.items()
            if not name.endswith("_total")
        ]
        families.append(
            CounterMetricFamily(
                "wsproto_broker_reconnects",
                docs["wsproto_broker_reconnects_total"],
                value=values["wsproto_broker_reconnects_total"],
            )
        )
        return families


class Metrics:
    def __init__(self, read_live: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "wsproto_messages_in", "Envelopes received from clients", ["channel"], registry=r
        )
        self.messages_out = Counter(
            "wsproto_messages_out", "Envelopes queued to clients", ["channel"], registry=r
        )
        self.errors = Counter(
            "wsproto_errors", "Error envelopes sent to clients", ["code"], registry=r
        )
        self.dropped = Counter(
            "wsproto_dropped_messages",
            "Envelopes not delivered to a client whose queue was full",
            registry=r,
        )
        self.slow_consumer_closes = Counter(
            "wsproto_slow_consumer_closes", "Connections closed 1013 (queue overflow)", registry=r
        )
        self.publish_seconds = Histogram(
            "wsproto_publish_seconds",
            "Time to hand one message to the broker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fanout_seconds = Histogram(
            "wsproto_fanout_seconds",
            "Time to queue one batch from the broker to every local recipient",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.recoveries = Counter(
            "wsproto_recoveries",
            "Position requests by stream (chat, room) and outcome "
            "(recovered, not_recovered, history)",
            ["stream", "outcome"],
            registry=r,
        )
        self.gaps_filled = Counter(
            "wsproto_gaps_filled",
            "Streams filled from history after a gap or a broken subscription",
            registry=r,
        )
        self.lost_notices = Counter(
            "wsproto_lost_notices",
            "Lost notices sent (a gap history could not fill, or a new epoch), per stream",
            registry=r,
        )
        self.history_reads = Counter(
            "wsproto_history_reads", "Reads of a stream's history from the broker", registry=r
        )
        r.register(_Live(read_live))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def out_channel(broker_channel: str) -> str:
    """The client-facing channel of a broker channel, as a bounded label set."""
    if broker_channel.startswith("room:"):
        return "chat-room"
    if broker_channel in ("ping1", "ping2"):
        return "ping"
    return broker_channel
