"""Per-shard metrics of the cluster broker, read at scrape time.

Register with ``registry.register(ShardCollector(broker.shard_stats))``: one
sample per pub/sub link (``shard`` is the node's address, ``role`` ``master`` or
``classic``), so a dashboard shows which shard a server cannot reach and how
often each one made it subscribe again (each such resubscription is a gap the
hub filled from history: ``wsproto_gaps_filled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .bridge import ShardStats


class ShardCollector(Collector):
    def __init__(self, read: Callable[[], list[ShardStats]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        labels = ["shard", "role"]
        up = GaugeMetricFamily(
            "wsproto_broker_shard_up",
            "1 while the pub/sub link to this node is open",
            labels=labels,
        )
        subs = GaugeMetricFamily(
            "wsproto_broker_shard_subscriptions",
            "Subscriptions of this server on this node",
            labels=labels,
        )
        resubscribed = CounterMetricFamily(
            "wsproto_broker_shard_resubscriptions",
            "Channels subscribed again on this node after losing them (failover, slot move)",
            labels=labels,
        )
        reconnects = CounterMetricFamily(
            "wsproto_broker_shard_reconnects",
            "Times the pub/sub link to this node was re-established",
            labels=labels,
        )
        for stats in self._read():
            key = [stats.address, stats.role]
            up.add_metric(key, 1.0 if stats.connected else 0.0)
            subs.add_metric(key, float(stats.subscriptions))
            resubscribed.add_metric(key, float(stats.resubscriptions))
            reconnects.add_metric(key, float(stats.reconnects))
        yield from (up, subs, resubscribed, reconnects)
