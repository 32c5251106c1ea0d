"""Room table: which local connections are in which room, and what each may get.

Rules:
- the first local member of a room means this server must subscribe to the
  room's broker channel; the last one leaving means it must unsubscribe
  (``add`` and ``remove`` say so; the hub acts on it);
- a member is *pending* from ``add`` until ``activate``: room traffic for it is
  buffered, so the joiner sees its ``MemberList`` (and any replay) before
  anything else from the room, and loses nothing published in between;
- ``activate`` gives the member a *floor*, the room's position in its
  ``MemberList``: it is sent no message at or below the floor (it has them, or
  they were before its join), also when they reach this server late;
- the pending buffer is bounded; past the bound traffic goes straight to the
  member (order degrades, nothing is lost, memory stays bounded).

Plain synchronous code, generic over the member type.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from .positions import Entry, Position

M = TypeVar("M", bound=Hashable)


class _Slot:
    __slots__ = ("buffer", "floor")

    def __init__(self) -> None:
        self.buffer: list[Entry] | None = []  # None once live
        self.floor: Position | None = None


def past(entry: Entry, floor: Position) -> bool:
    """Whether a member whose floor is ``floor`` should get ``entry``."""
    return entry.offset == 0 or entry.epoch != floor.epoch or entry.offset > floor.offset


class RoomTable(Generic[M]):
    def __init__(self, pending_limit: int = 1024) -> None:
        self._rooms: dict[str, dict[M, _Slot]] = {}
        self._pending_limit = pending_limit

    def add(self, room: str, member: M) -> bool:
        """Add ``member`` as pending; True when it is the room's first local member."""
        members = self._rooms.get(room)
        if members is None:
            self._rooms[room] = {member: _Slot()}
            return True
        if member in members:
            raise ValueError(f"{member!r} is already in room {room!r}")
        members[member] = _Slot()
        return False

    def activate(self, room: str, member: M, floor: Position) -> list[Entry]:
        """Make a pending member live from ``floor`` on; returns what was buffered
        for it past the floor, in order."""
        slot = self._rooms[room][member]
        buffered = slot.buffer or []
        slot.buffer = None
        slot.floor = floor
        return [entry for entry in buffered if past(entry, floor)]

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

    def route(self, room: str, entry: Entry) -> list[M]:
        """Live members to send ``entry`` to now; pending members buffer it."""
        members = self._rooms.get(room)
        if not members:
            return []
        targets: list[M] = []
        for member, slot in members.items():
            buffer = slot.buffer
            if buffer is not None and len(buffer) < self._pending_limit:
                buffer.append(entry)
                continue
            floor = slot.floor
            if floor is not None:
                if not past(entry, floor):
                    continue
                if entry.offset:
                    slot.floor = None  # the stream has moved past it for good
            targets.append(member)
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
