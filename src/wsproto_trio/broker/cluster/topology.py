"""Who owns which slot: a Redis Cluster's topology as read from ``CLUSTER SHARDS``.

Rules:
- a shard owns slot ranges and has one master and any number of replicas; only
  nodes that ``CLUSTER SHARDS`` calls ``online`` count (a failed master is no
  owner, so its slots have no owner until a replica is promoted);
- a sharded channel or key lives on the master of its slot (``slot_of``: the
  CRC16 of its hash tag, as the server computes it);
- a ``MOVED`` reply is a hint that one slot has a new owner: ``moved`` records
  it until the next full read replaces the whole map.

Plain synchronous code: the bridge reads ``CLUSTER SHARDS`` and hands the reply here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.crc import key_slot

SLOTS = 16384

Address = tuple[str, int]


def slot_of(name: str) -> int:
    """The slot of a key or sharded channel (its ``{hash tag}`` when it has one)."""
    return key_slot(name.encode())


def address_text(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


@dataclass(frozen=True, slots=True)
class Shard:
    ranges: tuple[tuple[int, int], ...]
    master: Address | None
    replicas: tuple[Address, ...] = ()


@dataclass(slots=True)
class Topology:
    """Slot ranges sorted by start, each with its master (or ``None``)."""

    shards: tuple[Shard, ...] = ()
    _starts: list[int] = field(default_factory=list)
    _ranges: list[tuple[int, int, Address | None]] = field(default_factory=list)
    _moved: dict[int, Address] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ranges = sorted(
            (start, end, shard.master) for shard in self.shards for start, end in shard.ranges
        )
        self._ranges = ranges
        self._starts = [start for start, _, _ in ranges]

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Topology:
        """A ``CLUSTER SHARDS`` reply (RESP2 flat lists, or redis-py's dicts)."""
        shards: list[Shard] = []
        for raw in reply:
            entry = _pairs(raw)
            flat = [int(slot) for slot in entry.get("slots", ())]
            ranges = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
            master: Address | None = None
            replicas: list[Address] = []
            for raw_node in entry.get("nodes", ()):
                node = _pairs(raw_node)
                if str(node.get("health")) != "online":
                    continue
                host = str(node.get("endpoint") or node.get("ip") or "")
                if host in ("", "?"):
                    host = str(node.get("ip") or "")
                address = (host, int(node["port"]))
                if str(node.get("role")) == "master":
                    master = address
                else:
                    replicas.append(address)
            shards.append(Shard(ranges, master, tuple(replicas)))
        return cls(tuple(shards))

    @property
    def masters(self) -> list[Address]:
        """Masters that own slots, in a stable order."""
        return sorted({s.master for s in self.shards if s.master is not None and s.ranges})

    @property
    def nodes(self) -> list[Address]:
        """Every online node, masters and replicas, in a stable order."""
        found: set[Address] = set()
        for shard in self.shards:
            if shard.master is not None:
                found.add(shard.master)
            found.update(shard.replicas)
        return sorted(found)

    @property
    def complete(self) -> bool:
        """Every slot has an online master."""
        covered = 0
        for start, end, master in self._ranges:
            if master is not None:
                covered += end - start + 1
        return covered == SLOTS

    def owner(self, slot: int) -> Address | None:
        if slot in self._moved:
            return self._moved[slot]
        index = bisect.bisect_right(self._starts, slot) - 1
        if index < 0:
            return None
        start, end, master = self._ranges[index]
        return master if start <= slot <= end else None

    def moved(self, slot: int, address: Address) -> None:
        self._moved[slot] = address

    def slots_of(self, master: Address) -> int:
        return sum(end - start + 1 for start, end, m in self._ranges if m == master)


def _pairs(raw: Any) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return {str(k): v for k, v in raw.items()}
    items = list(raw) if isinstance(raw, Iterable) else []
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
