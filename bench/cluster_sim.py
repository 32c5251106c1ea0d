"""Redis Cluster at internet scale, on paper and measured: what the cluster broker costs.

    .venv/bin/python bench/cluster_sim.py [--servers 100] [--rooms 10000] [--masters 6]
        [--replicas 1] [--chat-rate 100] [--message-bytes 300] [--measure] [--json out.json]

The model follows the broker's rules (docs/deployment.md, "Redis Cluster"):
- each server holds one SSUBSCRIBE per room it has a member in, on the master of
  the room's slot (our naming: ``room:{R}``, the slot computed as Redis does);
- each server holds one pub/sub link per master plus one classic link (chat,
  pings) on one node picked from its id, so connections do not grow with rooms;
- a failed master's replica takes over its slots; every server re-sends one
  SSUBSCRIBE per room of those slots to the promoted replica (one per command:
  a command may not span slots), and re-registers its presence;
- a classic PUBLISH (chat, pings) is carried by the cluster bus to every node;
  an SPUBLISH only to the replicas of the room's shard.

``--measure`` starts a real local cluster (``tests/cluster_support.py``) and
measures what the model needs from this machine: SSUBSCRIBE replies per second
on one node (the storm's rate), and the CPU that 20,000 classic PUBLISH cost the
whole cluster against as many SPUBLISH (the bus fan-out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from wsproto_trio.broker.cluster.bridge import wire_name  # noqa: E402
from wsproto_trio.broker.cluster.topology import SLOTS, slot_of  # noqa: E402

# Centrifugo's published figures for its node-grouped Redis connections
# (blog "Scaling WebSocket connections with Redis sharded PUB/SUB"): 200
# Centrifugo nodes, 128 partitions, 6 Redis nodes.
CENTRIFUGO = {"nodes": 200, "partitions": 128, "redis_nodes": 6, "before": 25_600, "after": 1_200}


def model(args: argparse.Namespace, measured: dict[str, float]) -> dict[str, Any]:
    masters = args.masters
    nodes = masters * (1 + args.replicas)
    span = SLOTS / masters

    def master_of(slot: int) -> int:
        return min(masters - 1, int(slot // span))

    per_master = Counter(
        master_of(slot_of(wire_name(f"room:room-{i}")[0])) for i in range(args.rooms)
    )
    rooms_on = [per_master[m] for m in range(masters)]
    subs_per_node = [count * args.servers for count in rooms_on]
    storm_per_server = max(rooms_on)  # the failed master is the busiest one
    storm_total = storm_per_server * args.servers
    rate = measured.get("ssubscribe_per_s")
    publish_bus = args.chat_rate * (nodes - 1)
    out: dict[str, Any] = {
        "servers": args.servers,
        "rooms_per_server": args.rooms,
        "masters": masters,
        "nodes": nodes,
        "connections_per_server": masters + 1,
        "connections_per_server_one_per_room": args.rooms + 3,
        "pubsub_connections_cluster_wide": args.servers * (masters + 1),
        "connections_per_master": args.servers + args.servers / nodes,
        "subscriptions_total": args.servers * args.rooms,
        "subscriptions_per_master_min": min(subs_per_node),
        "subscriptions_per_master_max": max(subs_per_node),
        "storm_ssubscribe_per_server": storm_per_server,
        "storm_ssubscribe_total": storm_total,
        "storm_seconds_at_measured_rate": storm_total / rate if rate else None,
        # RedisBroker.resync, which the cluster broker reuses, re-registers every
        # local member (SADD, SADD, ENSURE) after a failover, not only the failed
        # shard's: one member per room per server assumed.
        "resync_commands_total": args.servers * args.rooms * 3,
        "resync_commands_if_limited_to_the_shard": storm_total * 3,
        "chat_bus_messages_per_s": publish_bus,
        "chat_bus_bytes_per_s": publish_bus * args.message_bytes,
        "chat_deliveries_per_s": args.chat_rate * args.servers,
        "room_bus_messages_per_publish": args.replicas,
        "centrifugo_equivalent_ours": CENTRIFUGO["nodes"] * (CENTRIFUGO["redis_nodes"] + 1),
        **{f"centrifugo_{k}": v for k, v in CENTRIFUGO.items()},
        **{f"measured_{k}": v for k, v in measured.items()},
    }
    return out


def measure() -> dict[str, float]:
    import psutil
    import redis
    from tests.cluster_support import LocalCluster

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (apt-get install -y redis-server)")
    found: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wsproto-sim-") as tmp:
        cluster = LocalCluster(binary, Path(tmp))
        try:
            cluster.start()
            port = cluster.master_ports()[0]
            found["ssubscribe_per_s"] = _ssubscribe_rate(cluster, port)
            pids = [n.process.pid for n in cluster.nodes if n.process is not None]
            rc = redis.RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
            for kind in ("PUBLISH", "SPUBLISH"):
                before = sum(_cpu(psutil.Process(pid)) for pid in pids)
                began = time.perf_counter()
                pipe = rc.pipeline(transaction=False)
                for i in range(20_000):
                    channel = "chat" if kind == "PUBLISH" else f"room:{{r{i % 500}}}"
                    pipe.execute_command(kind, channel, "x" * 300)
                pipe.execute()
                found[f"{kind.lower()}_20k_s"] = time.perf_counter() - began
                found[f"{kind.lower()}_20k_cluster_cpu_s"] = (
                    sum(_cpu(psutil.Process(pid)) for pid in pids) - before
                )
            rc.close()
        finally:
            cluster.stop()
    return found


def _cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _ssubscribe_rate(cluster: Any, port: int) -> float:
    """Replies per second to 10,000 pipelined SSUBSCRIBEs of rooms that one node
    owns (as the bridge sends them after a failover: one buffer, one per room)."""
    shard = next(s for s in cluster.shards() if s["master"] == port)
    ranges = list(zip(shard["slots"][0::2], shard["slots"][1::2], strict=True))
    owned: list[str] = []
    for i in range(200_000):
        wire = wire_name(f"room:room-{i}")[0]
        if any(start <= slot_of(wire) <= end for start, end in ranges):
            owned.append(wire)
            if len(owned) == 10_000:
                break
    payload = b"".join(
        b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in owned
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        began = time.perf_counter()
        sock.sendall(payload)
        replies = 0
        buffer = b""
        while replies < len(owned):
            buffer += sock.recv(1 << 20)
            replies = buffer.count(b"$10\r\nssubscribe")
        return len(owned) / (time.perf_counter() - began)


def table(result: dict[str, Any]) -> str:
    rows = [
        ("servers x rooms per server x masters",
         f"{result['servers']} x {result['rooms_per_server']} x {result['masters']}"),
        ("pub/sub connections per server", f"{result['connections_per_server']} "
         f"(one per room would be {result['connections_per_server_one_per_room']})"),
        ("pub/sub connections, whole cluster", f"{result['pubsub_connections_cluster_wide']}"),
        ("connections per master (sharded + classic)", f"{result['connections_per_master']:.0f}"),
        ("sharded subscriptions, total", f"{result['subscriptions_total']:,}"),
        ("sharded subscriptions per master (min-max)",
         f"{result['subscriptions_per_master_min']:,} - "
         f"{result['subscriptions_per_master_max']:,}"),
        ("failover storm: SSUBSCRIBE per server", f"{result['storm_ssubscribe_per_server']:,}"),
        ("failover storm: SSUBSCRIBE on the promoted replica",
         f"{result['storm_ssubscribe_total']:,}"),
        ("failover storm: time at the measured rate",
         "-" if result["storm_seconds_at_measured_rate"] is None
         else f"{result['storm_seconds_at_measured_rate']:.2f} s"),
        ("failover: presence re-registration commands (all members)",
         f"{result['resync_commands_total']:,}"),
        ("  ... if limited to the failed shard's rooms",
         f"{result['resync_commands_if_limited_to_the_shard']:,}"),
        ("chat: bus messages per second (classic PUBLISH to every node)",
         f"{result['chat_bus_messages_per_s']:,}"),
        ("chat: bus bytes per second", f"{result['chat_bus_bytes_per_s']:,}"),
        ("room message: bus messages per SPUBLISH", f"{result['room_bus_messages_per_publish']}"),
        ("Centrifugo, 200 nodes / 6 Redis: connections before -> after",
         f"{result['centrifugo_before']:,} -> {result['centrifugo_after']:,}"),
        ("ours for 200 servers / 6 masters", f"{result['centrifugo_equivalent_ours']:,}"),
    ]  # fmt: skip
    for key, value in result.items():
        if key.startswith("measured_"):
            rows.append((key.removeprefix("measured_"), f"{value:,.3f}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=100)
    p.add_argument("--rooms", type=int, default=10_000, help="rooms each server has members in")
    p.add_argument("--masters", type=int, default=6)
    p.add_argument("--replicas", type=int, default=1, help="replicas per master")
    p.add_argument("--chat-rate", type=float, default=100.0, help="chat messages per second")
    p.add_argument("--message-bytes", type=int, default=300)
    p.add_argument("--measure", action="store_true", help="measure rates on a local cluster")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    measured = measure() if args.measure else {}
    result = model(args, measured)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
