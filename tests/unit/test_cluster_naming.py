"""Sans-IO parts of the cluster broker: topology, slots, names, routing keys."""

from __future__ import annotations

import pytest

from wsproto_trio.broker.cluster.bridge import room_tag, wire_name
from wsproto_trio.broker.cluster.broker import _position
from wsproto_trio.broker.cluster.commands import first_key
from wsproto_trio.broker.cluster.topology import Topology, slot_of
from wsproto_trio.core.positions import Position

SHARDS = [
    ["slots", [0, 5460], "nodes", [
        ["id", "a", "port", 7000, "ip", "10.0.0.1", "endpoint", "10.0.0.1", "role", "master",
         "replication-offset", 5, "health", "online"],
        ["id", "b", "port", 7003, "ip", "10.0.0.4", "endpoint", "10.0.0.4", "role", "replica",
         "replication-offset", 5, "health", "online"],
    ]],
    ["slots", [5461, 10922], "nodes", [
        ["id", "c", "port", 7001, "ip", "10.0.0.2", "endpoint", "10.0.0.2", "role", "master",
         "replication-offset", 5, "health", "fail"],
    ]],
    ["slots", [10923, 12000, 12001, 16383], "nodes", [
        ["id", "d", "port", 7002, "ip", "10.0.0.3", "endpoint", "10.0.0.3", "role", "master",
         "replication-offset", 5, "health", "online"],
    ]],
]  # fmt: skip


def test_topology_from_cluster_shards() -> None:
    topology = Topology.parse(SHARDS)
    assert topology.masters == [("10.0.0.1", 7000), ("10.0.0.3", 7002)]
    assert ("10.0.0.4", 7003) in topology.nodes
    assert topology.owner(0) == ("10.0.0.1", 7000)
    assert topology.owner(5460) == ("10.0.0.1", 7000)
    assert topology.owner(6000) is None  # its master failed; no replica promoted yet
    assert topology.owner(12001) == ("10.0.0.3", 7002)
    assert not topology.complete
    topology.moved(6000, ("10.0.0.9", 7009))
    assert topology.owner(6000) == ("10.0.0.9", 7009)


def test_topology_accepts_redis_py_dicts() -> None:
    reply = [{"slots": [0, 16383], "nodes": [{"port": 1, "ip": "h", "endpoint": "h",
              "role": "master", "health": "online"}]}]  # fmt: skip
    topology = Topology.parse(reply)
    assert topology.complete and topology.masters == [("h", 1)]


@pytest.mark.parametrize("room", ["lobby", "a}b", "{x}", "é ü", "}starts", "}"])
def test_a_room_channel_and_its_keys_share_a_slot(room: str) -> None:
    channel, sharded = wire_name(f"room:{room}")
    assert sharded
    tag = room_tag(room)
    for key in (f"wsproto:room:{{{tag}}}:meta", f"wsproto:room:{{{tag}}}:members"):
        assert slot_of(key) == slot_of(channel), key


def test_room_tags_are_one_to_one() -> None:
    names = ["}x", "x", "}", "}}", "x}"]  # valid names only: no control characters
    assert len({room_tag(n) for n in names}) == len(names)


def test_classic_channels_are_not_sharded() -> None:
    assert wire_name("chat") == ("chat", False)
    assert wire_name("ping1") == ("ping1", False)


@pytest.mark.parametrize(
    ("payload", "position"),
    [
        ('12 ep-1 {"channel":"chat"}', Position(12, "ep-1")),
        ('{"channel":"ping"}', None),
        ("1", None),
        ("2 ", None),
        ("", None),
    ],
)
def test_position_of_a_payload(payload: str, position: Position | None) -> None:
    assert _position(payload) == position


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("EVALSHA", "sha", 2, "k1", "k2", "a"), "k1"),
        (("EVAL", "text", 0, "a"), None),
        (("PUBLISH", "chat", "x"), None),
        (("SPUBLISH", "room:{r}", "x"), "room:{r}"),
        (("HGET", "h", "f"), "h"),
    ],
)
def test_commands_are_routed_by_their_first_key(args: tuple[object, ...], key: str | None) -> None:
    assert first_key(args) == key


def test_shard_metrics_render_one_sample_per_link() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from wsproto_trio.broker.cluster.bridge import ShardStats
    from wsproto_trio.broker.cluster.metrics import ShardCollector

    stats = [
        ShardStats("10.0.0.1:7000", "master", True, 12, 3, 1),
        ShardStats("10.0.0.2:7001", "classic", False, 3, 0, 0),
    ]
    registry = CollectorRegistry()
    registry.register(ShardCollector(lambda: stats))
    text = generate_latest(registry).decode()
    assert 'wsproto_broker_shard_up{role="master",shard="10.0.0.1:7000"} 1.0' in text
    assert 'wsproto_broker_shard_up{role="classic",shard="10.0.0.2:7001"} 0.0' in text
    master = 'role="master",shard="10.0.0.1:7000"'
    assert f"wsproto_broker_shard_resubscriptions_total{{{master}}} 3.0" in text
    assert 'wsproto_broker_shard_subscriptions{role="master",shard="10.0.0.1:7000"} 12.0' in text
