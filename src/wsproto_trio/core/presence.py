"""Presence rules: who is in which room, on which server, for how long.

Rules (shared by both brokers; the Redis broker runs the same rules in Lua):
- a member is ``(room, user)`` owned by one server; joining twice is a no-op;
- each server holds a lease of ``lease_seconds(ttl)`` (3/4 of ``PRESENCE_TTL``)
  that it renews, and looks for lapsed leases, every ``tick_seconds(ttl)``
  (1/4): a server that dies is reaped at most lease + one tick = ``PRESENCE_TTL``
  after its last renewal, and a live one may miss two renewals in a row;
- reaping removes the server's lease and members in one atomic step, so when
  several servers race to reap the same one exactly one of them gets the list
  of removed members (and announces ``LeftRoom`` for them) and the others get
  nothing;
- a server that finds its lease gone when renewing (it was paused, then reaped)
  registers again and re-adds its live members, announcing them as new joins.

Plain synchronous code; the in-memory broker uses it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def lease_seconds(presence_ttl: float) -> float:
    """How long a renewal keeps a server alive."""
    return presence_ttl * 0.75


def tick_seconds(presence_ttl: float) -> float:
    """How often a server renews its lease and reaps lapsed ones."""
    return presence_ttl / 4


@dataclass(slots=True)
class PresenceTable:
    rooms: dict[str, dict[str, str]] = field(default_factory=dict)  # room -> user -> server
    leases: dict[str, float] = field(default_factory=dict)  # server -> expiry time
    connections: dict[str, int] = field(default_factory=dict)  # server -> connections

    def renew(self, server: str, now: float, ttl: float, connections: int) -> bool:
        """Extend ``server``'s lease; False if it had none (new, or reaped)."""
        existed = server in self.leases
        self.leases[server] = now + ttl
        self.connections[server] = connections
        return existed

    def join(self, room: str, user: str, server: str) -> list[str]:
        """Add a member; returns the room's members afterwards."""
        members = self.rooms.setdefault(room, {})
        members[user] = server
        return list(members)

    def leave(self, room: str, user: str) -> bool:
        """Remove a member; False if it was not there."""
        members = self.rooms.get(room)
        if members is None or members.pop(user, None) is None:
            return False
        if not members:
            del self.rooms[room]
        return True

    def members(self, room: str) -> list[str]:
        return list(self.rooms.get(room, ()))

    def room_counts(self) -> dict[str, int]:
        return {room: len(members) for room, members in self.rooms.items()}

    def expired(self, now: float) -> list[str]:
        return [server for server, expiry in self.leases.items() if expiry <= now]

    def reap(self, server: str, now: float | None = None) -> list[tuple[str, str]]:
        """Remove ``server`` and its members; returns the removed ``(room, user)`` pairs.

        With ``now``, only a lapsed lease is reaped (a renewal that won the race
        keeps the server alive); without it, the server is removed regardless
        (its own clean shutdown).
        """
        expiry = self.leases.get(server)
        if now is not None and (expiry is None or expiry > now):
            return []
        self.leases.pop(server, None)
        self.connections.pop(server, None)
        removed: list[tuple[str, str]] = []
        for room in list(self.rooms):
            members = self.rooms[room]
            for user in [u for u, owner in members.items() if owner == server]:
                del members[user]
                removed.append((room, user))
            if not members:
                del self.rooms[room]
        return removed

    def servers(self) -> dict[str, int]:
        return dict(self.connections)
