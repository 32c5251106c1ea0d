"""Room table: which local connections are in which room.

Rules:
- the first local member of a room means this server must subscribe to the
  room's broker channel; the last one leaving means it must unsubscribe
  (``add`` and ``remove`` say so; the hub acts on it);
- a member is *pending* from ``add`` until ``activate``: room traffic for it is
  buffered, so the joiner sees its ``MemberList`` before anything else from the
  room, and loses nothing published between subscribing and that list;
- the pending buffer is bounded; past the bound traffic goes straight to the
  member (order degrades, nothing is lost, memory stays bounded).

Plain synchronous code, generic over the member type.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

M = TypeVar("M", bound=Hashable)


class RoomTable(Generic[M]):
    def __init__(self, pending_limit: int = 1024) -> None:
        self._rooms: dict[str, dict[M, list[str] | None]] = {}
        self._pending_limit = pending_limit

    def add(self, room: str, member: M) -> bool:
        """Add ``member`` as pending; True when it is the room's first local member."""
        members = self._rooms.get(room)
        if members is None:
            self._rooms[room] = {member: []}
            return True
        if member in members:
            raise ValueError(f"{member!r} is already in room {room!r}")
        members[member] = []
        return False

    def activate(self, room: str, member: M) -> list[str]:
        """Make a pending member live; returns what was buffered for it, in order."""
        members = self._rooms[room]
        buffered = members[member]
        members[member] = None
        return buffered or []

    def remove(self, room: str, member: M) -> bool:
        """Remove ``member``; True when the room has no local member left."""
        members = self._rooms.get(room)
        if members is None or member not in members:
            return False
        del members[member]
        if members:
            return False
        del self._rooms[room]
        return True

    def route(self, room: str, payload: str) -> list[M]:
        """Live members to send ``payload`` to now; pending members buffer it."""
        members = self._rooms.get(room)
        if not members:
            return []
        targets: list[M] = []
        for member, buffer in members.items():
            if buffer is None or len(buffer) >= self._pending_limit:
                targets.append(member)
            else:
                buffer.append(payload)
        return targets

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def rooms(self) -> dict[str, int]:
        """Local member count per room."""
        return {room: len(members) for room, members in self._rooms.items()}

    def members(self, room: str) -> list[M]:
        return list(self._rooms.get(room, ()))

    @property
    def member_count(self) -> int:
        return sum(len(members) for members in self._rooms.values())
