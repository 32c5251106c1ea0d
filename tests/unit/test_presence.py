"""presence: members per room and server, leases, reaping dead servers."""

from __future__ import annotations

import pytest

from wsproto_trio.core.presence import PresenceTable

TTL = 15.0


def table_with(*members: tuple[str, str, str]) -> PresenceTable:
    """A table holding ``(room, user, server)`` members."""
    table = PresenceTable()
    for room, user, server in members:
        table.join(room, user, server)
    return table


# Members --------------------------------------------------------------------------


def test_join_returns_members_including_joiner_in_join_order() -> None:
    table = PresenceTable()
    assert table.join("lobby", "u1", "s1") == ["u1"]
    assert table.join("lobby", "u2", "s2") == ["u1", "u2"]
    assert table.join("lobby", "u3", "s1") == ["u1", "u2", "u3"]
    assert table.members("lobby") == ["u1", "u2", "u3"]


def test_join_twice_is_a_no_op() -> None:
    table = table_with(("lobby", "u1", "s1"), ("lobby", "u2", "s1"))
    assert table.join("lobby", "u1", "s1") == ["u1", "u2"]
    assert table.room_counts() == {"lobby": 2}


def test_rooms_are_separate() -> None:
    table = table_with(("a", "u1", "s1"), ("b", "u2", "s1"), ("a", "u3", "s2"))
    assert table.members("a") == ["u1", "u3"]
    assert table.members("b") == ["u2"]
    assert table.members("nowhere") == []
    assert table.room_counts() == {"a": 2, "b": 1}


def test_leave() -> None:
    table = table_with(("lobby", "u1", "s1"), ("lobby", "u2", "s1"))
    assert table.leave("lobby", "u1") is True
    assert table.members("lobby") == ["u2"]
    assert table.leave("lobby", "u1") is False


@pytest.mark.parametrize(
    ("room", "user"), [("lobby", "stranger"), ("nowhere", "u1")], ids=["not-member", "no-room"]
)
def test_leave_absent_is_false(room: str, user: str) -> None:
    table = table_with(("lobby", "u1", "s1"))
    assert table.leave(room, user) is False
    assert table.room_counts() == {"lobby": 1}


def test_last_leave_deletes_the_room() -> None:
    table = table_with(("lobby", "u1", "s1"), ("other", "u1", "s1"))
    assert table.leave("lobby", "u1") is True
    assert "lobby" not in table.rooms
    assert table.room_counts() == {"other": 1}


# Leases ---------------------------------------------------------------------------


def test_renew_is_false_first_then_true() -> None:
    table = PresenceTable()
    assert table.renew("s1", now=0.0, ttl=TTL, connections=3) is False
    assert table.renew("s1", now=5.0, ttl=TTL, connections=4) is True
    assert table.renew("s2", now=5.0, ttl=TTL, connections=0) is False
    assert table.leases == {"s1": 5.0 + TTL, "s2": 5.0 + TTL}
    assert table.servers() == {"s1": 4, "s2": 0}


@pytest.mark.parametrize(
    ("now", "expected"),
    [(0.0, []), (TTL - 0.001, []), (TTL, ["s1"]), (TTL + 1.0, ["s1"]), (TTL + 10.0, ["s1", "s2"])],
)
def test_expired(now: float, expected: list[str]) -> None:
    table = PresenceTable()
    table.renew("s1", now=0.0, ttl=TTL, connections=0)
    table.renew("s2", now=10.0, ttl=TTL, connections=0)
    assert table.expired(now) == expected


def test_renewal_postpones_expiry() -> None:
    table = PresenceTable()
    table.renew("s1", now=0.0, ttl=TTL, connections=0)
    table.renew("s1", now=TTL / 3, ttl=TTL, connections=0)
    assert table.expired(TTL) == []
    assert table.expired(TTL / 3 + TTL) == ["s1"]


# Reaping --------------------------------------------------------------------------


def two_servers() -> PresenceTable:
    table = table_with(
        ("lobby", "u1", "s1"),
        ("lobby", "u2", "s2"),
        ("lobby", "u3", "s1"),
        ("solo", "u1", "s1"),
        ("other", "u2", "s2"),
    )
    table.renew("s1", now=0.0, ttl=TTL, connections=2)
    table.renew("s2", now=0.0, ttl=TTL, connections=1)
    return table


@pytest.mark.parametrize("now", [0.0, TTL / 2, TTL - 0.001])
def test_reap_with_now_spares_a_live_lease(now: float) -> None:
    table = two_servers()
    assert table.reap("s1", now) == []
    assert table.members("lobby") == ["u1", "u2", "u3"]
    assert table.servers() == {"s1": 2, "s2": 1}
    assert table.renew("s1", now=now, ttl=TTL, connections=2) is True


@pytest.mark.parametrize("now", [TTL, TTL + 0.001, 1000.0])
def test_reap_with_now_removes_a_lapsed_lease(now: float) -> None:
    table = two_servers()
    assert sorted(table.reap("s1", now)) == [("lobby", "u1"), ("lobby", "u3"), ("solo", "u1")]
    assert table.members("lobby") == ["u2"]
    assert "solo" not in table.rooms  # emptied rooms are deleted
    assert table.room_counts() == {"lobby": 1, "other": 1}
    assert table.servers() == {"s2": 1}
    assert "s1" not in table.leases
    # Exactly one reaper gets the list.
    assert table.reap("s1", now) == []
    assert table.reap("s1") == []


def test_reap_with_now_of_unknown_server_is_empty() -> None:
    table = table_with(("lobby", "u1", "ghost"))
    assert table.reap("ghost", 1000.0) == []
    assert table.members("lobby") == ["u1"]


@pytest.mark.parametrize("renewed", [True, False], ids=["fresh-lease", "no-lease"])
def test_reap_without_now_is_unconditional(renewed: bool) -> None:
    table = table_with(("lobby", "u1", "s1"), ("lobby", "u2", "s2"), ("solo", "u3", "s1"))
    if renewed:
        table.renew("s1", now=0.0, ttl=TTL, connections=1)
    assert sorted(table.reap("s1")) == [("lobby", "u1"), ("solo", "u3")]
    assert table.room_counts() == {"lobby": 1}
    assert "s1" not in table.leases
    assert "s1" not in table.servers()
    assert table.reap("s1") == []


def test_reaped_server_renews_as_new() -> None:
    table = two_servers()
    table.reap("s1", TTL + 1.0)
    assert table.renew("s1", now=TTL + 2.0, ttl=TTL, connections=2) is False
    # It re-adds its live members; they are new joins.
    assert table.join("lobby", "u1", "s1") == ["u2", "u1"]


def test_reap_leaves_other_servers_alone() -> None:
    table = two_servers()
    before = table.members("other")
    table.reap("s1")
    assert table.members("other") == before
    assert table.expired(TTL) == ["s2"]
