"""rooms: the room table, its reference counts, pending buffers and floors."""

from __future__ import annotations

import pytest

from wsproto_trio.core.positions import Entry, Position, plain
from wsproto_trio.core.rooms import RoomTable

FLOOR = Position(0, "e")


def texts(entries: list[Entry]) -> list[str]:
    return [entry.text for entry in entries]


ROOMS = ["lobby", "caf\u00e9", "a:b"]


def live_table(room: str, *members: str, pending_limit: int = 1024) -> RoomTable[str]:
    table: RoomTable[str] = RoomTable(pending_limit=pending_limit)
    for member in members:
        table.add(room, member)
        assert texts(table.activate(room, member, FLOOR)) == []
    return table


# Reference counts -----------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 5])
@pytest.mark.parametrize("room", ROOMS)
def test_add_is_true_only_for_first_member(room: str, count: int) -> None:
    table: RoomTable[str] = RoomTable()
    firsts = [table.add(room, f"m{i}") for i in range(count)]
    assert firsts == [True] + [False] * (count - 1)
    assert room in table
    assert table.rooms() == {room: count}
    assert table.member_count == count


@pytest.mark.parametrize("count", [1, 2, 5])
@pytest.mark.parametrize("room", ROOMS)
def test_remove_is_true_only_for_last_member(room: str, count: int) -> None:
    table = live_table(room, *[f"m{i}" for i in range(count)])
    lasts = [table.remove(room, f"m{i}") for i in range(count)]
    assert lasts == [False] * (count - 1) + [True]
    assert room not in table
    assert table.rooms() == {}
    assert table.member_count == 0


@pytest.mark.parametrize("activate", [True, False], ids=["live", "pending"])
def test_remove_pending_or_live_member(activate: bool) -> None:
    table: RoomTable[str] = RoomTable()
    table.add("lobby", "a")
    if activate:
        texts(table.activate("lobby", "a", FLOOR))
    assert table.remove("lobby", "a") is True
    assert "lobby" not in table


@pytest.mark.parametrize(
    ("room", "member"),
    [("lobby", "stranger"), ("nowhere", "a")],
    ids=["not-a-member", "no-such-room"],
)
def test_remove_absent_is_false_and_changes_nothing(room: str, member: str) -> None:
    table = live_table("lobby", "a", "b")
    assert table.remove(room, member) is False
    assert table.rooms() == {"lobby": 2}


def test_remove_twice_is_false_the_second_time() -> None:
    table = live_table("lobby", "a", "b")
    assert table.remove("lobby", "a") is False
    assert table.remove("lobby", "a") is False
    assert table.remove("lobby", "b") is True
    assert table.remove("lobby", "b") is False


def test_room_emptied_then_refilled_is_first_again() -> None:
    table = live_table("lobby", "a")
    assert table.remove("lobby", "a") is True
    assert table.add("lobby", "a") is True
    assert table.add("lobby", "b") is False


@pytest.mark.parametrize("activate", [True, False], ids=["live", "pending"])
def test_duplicate_add_is_value_error(activate: bool) -> None:
    table: RoomTable[str] = RoomTable()
    table.add("lobby", "a")
    if activate:
        texts(table.activate("lobby", "a", FLOOR))
    with pytest.raises(ValueError, match="already in room"):
        table.add("lobby", "a")
    assert table.rooms() == {"lobby": 1}


def test_same_member_in_several_rooms() -> None:
    table: RoomTable[str] = RoomTable()
    assert [table.add(room, "a") for room in ROOMS] == [True] * len(ROOMS)
    assert table.rooms() == dict.fromkeys(ROOMS, 1)
    assert table.member_count == len(ROOMS)
    assert table.remove(ROOMS[0], "a") is True
    assert table.rooms() == dict.fromkeys(ROOMS[1:], 1)


def test_rooms_and_member_count() -> None:
    table: RoomTable[str] = RoomTable()
    assert table.rooms() == {}
    assert table.member_count == 0
    for room, count in [("a", 3), ("b", 1), ("c", 2)]:
        for i in range(count):
            table.add(room, f"{room}{i}")
    assert table.rooms() == {"a": 3, "b": 1, "c": 2}
    assert table.member_count == 6
    assert table.members("a") == ["a0", "a1", "a2"]
    assert table.members("nowhere") == []
    assert "nowhere" not in table


def test_members_are_any_hashable() -> None:
    table: RoomTable[tuple[int, str]] = RoomTable()
    assert table.add("lobby", (1, "x")) is True
    texts(table.activate("lobby", (1, "x"), FLOOR))
    assert table.route("lobby", plain("p")) == [(1, "x")]


# Routing and pending buffers ------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3])
def test_route_to_live_members(count: int) -> None:
    members = [f"m{i}" for i in range(count)]
    table = live_table("lobby", *members)
    assert table.route("lobby", plain("p1")) == members
    assert table.route("lobby", plain("p2")) == members


@pytest.mark.parametrize("room", ["nowhere", "Lobby"])
def test_route_to_room_without_members(room: str) -> None:
    table = live_table("lobby", "a")
    assert table.route(room, plain("p")) == []


def test_route_after_last_member_left() -> None:
    table = live_table("lobby", "a")
    table.remove("lobby", "a")
    assert table.route("lobby", plain("p")) == []


@pytest.mark.parametrize("count", [0, 1, 5, 100])
def test_pending_member_buffers_and_activate_returns_in_order(count: int) -> None:
    table: RoomTable[str] = RoomTable()
    table.add("lobby", "joiner")
    payloads = [f"p{i}" for i in range(count)]
    for payload in payloads:
        assert table.route("lobby", plain(payload)) == []
    assert texts(table.activate("lobby", "joiner", FLOOR)) == payloads
    assert table.route("lobby", plain("after")) == ["joiner"]


def test_pending_and_live_members_together() -> None:
    table = live_table("lobby", "old")
    table.add("lobby", "new")
    assert table.route("lobby", plain("p1")) == ["old"]
    assert table.route("lobby", plain("p2")) == ["old"]
    assert texts(table.activate("lobby", "new", FLOOR)) == ["p1", "p2"]
    assert table.route("lobby", plain("p3")) == ["old", "new"]


def test_buffers_are_per_member_and_per_room() -> None:
    table: RoomTable[str] = RoomTable()
    table.add("r1", "a")
    table.route("r1", plain("r1-1"))
    table.add("r1", "b")
    table.add("r2", "a")
    table.route("r1", plain("r1-2"))
    table.route("r2", plain("r2-1"))
    assert texts(table.activate("r1", "b", FLOOR)) == ["r1-2"]
    assert texts(table.activate("r2", "a", FLOOR)) == ["r2-1"]
    assert texts(table.activate("r1", "a", FLOOR)) == ["r1-1", "r1-2"]


def test_activate_twice_returns_nothing_new() -> None:
    table: RoomTable[str] = RoomTable()
    table.add("lobby", "a")
    table.route("lobby", plain("p"))
    assert texts(table.activate("lobby", "a", FLOOR)) == ["p"]
    assert texts(table.activate("lobby", "a", FLOOR)) == []


def test_removed_pending_member_drops_its_buffer() -> None:
    table: RoomTable[str] = RoomTable()
    table.add("lobby", "a")
    table.route("lobby", plain("stale"))
    table.remove("lobby", "a")
    table.add("lobby", "a")
    assert texts(table.activate("lobby", "a", FLOOR)) == []


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_pending_buffer_is_bounded(limit: int) -> None:
    """Past the bound traffic goes straight to the member: nothing lost, memory bounded."""
    table: RoomTable[str] = RoomTable(pending_limit=limit)
    table.add("lobby", "joiner")
    buffered = [f"b{i}" for i in range(limit)]
    for payload in buffered:
        assert table.route("lobby", plain(payload)) == []
    for i in range(5):
        assert table.route("lobby", plain(f"over{i}")) == ["joiner"]
    assert texts(table.activate("lobby", "joiner", FLOOR)) == buffered


def test_pending_limit_applies_per_member() -> None:
    table = live_table("lobby", "live", pending_limit=2)
    table.add("lobby", "p1")
    assert table.route("lobby", plain("x1")) == ["live"]
    table.add("lobby", "p2")
    assert table.route("lobby", plain("x2")) == ["live"]
    assert table.route("lobby", plain("x3")) == ["live", "p1"]  # p1's buffer is full, p2's is not
    assert texts(table.activate("lobby", "p1", FLOOR)) == ["x1", "x2"]
    assert texts(table.activate("lobby", "p2", FLOOR)) == ["x2", "x3"]
