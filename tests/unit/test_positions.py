"""positions: recovery rules and the per-stream gap tracker (PROTOCOL.md section 7)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsproto_trio.core.positions import (
    HELD_LIMIT,
    Entry,
    Lost,
    Output,
    Position,
    StreamState,
    Tracker,
    frame,
    recovers,
    replay,
    split,
)
from wsproto_trio.core.rooms import RoomTable

PROPERTY = settings(max_examples=300, deadline=None, database=None)

E = "ep"


def state(top: int, kept: int, epoch: str = E) -> StreamState:
    """A stream at ``top`` keeping its latest ``kept`` messages, named by offset."""
    first = top - kept + 1
    return StreamState(Position(top, epoch), tuple(f"m{i}" for i in range(first, top + 1)))


def entry(offset: int, epoch: str = E) -> Entry:
    return Entry(offset, epoch, f"m{offset}")


def offsets(out: list[Output]) -> list[int]:
    return [item.offset for item in out if isinstance(item, Entry)]


# Wire form -------------------------------------------------------------------------


def test_frame_and_split_are_inverse() -> None:
    text = '{"channel":"chat","message":{"type":"X","contents":{"a":"1 2 3"}}}'
    assert split(frame(Position(42, "a-b_c"), text)) == Entry(42, "a-b_c", text)


@pytest.mark.parametrize("payload", ['{"channel":"chat-room"}', ""])
def test_plain_payloads_stay_plain(payload: str) -> None:
    assert split(payload) == Entry(0, "", payload)


# Recovery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "top", "kept", "expected"),
    [
        (Position(10, E), 10, 5, True),  # nothing missed
        (Position(5, E), 10, 5, True),  # 6..10 kept
        (Position(4, E), 10, 5, False),  # 5 is gone
        (Position(11, E), 10, 5, False),  # from the future
        (Position(10, "other"), 10, 5, False),  # another epoch
        (Position(0, E), 0, 0, True),  # empty stream, nothing missed
        (Position(0, E), 3, 3, True),
        (Position(3, E), 3, 0, True),  # HISTORY_SIZE=0: only when nothing was missed
        (Position(2, E), 3, 0, False),
    ],
)
def test_recovers(since: Position, top: int, kept: int, expected: bool) -> None:
    assert recovers(state(top, kept), since) is expected


def test_replay_on_recovery_is_n_plus_1_to_top() -> None:
    entries, recovered = replay(state(10, 5), Position(7, E), history=3)
    assert recovered is True
    assert [e.offset for e in entries] == [8, 9, 10]
    assert [e.text for e in entries] == ["m8", "m9", "m10"]


def test_failed_recovery_falls_back_to_history() -> None:
    entries, recovered = replay(state(10, 5), Position(1, E), history=2)
    assert recovered is False
    assert [e.offset for e in entries] == [9, 10]


def test_failed_recovery_without_history_replays_nothing() -> None:
    assert replay(state(10, 5), Position(3, "gone"), history=None) == ([], False)


def test_history_alone_has_no_recovered_flag() -> None:
    entries, recovered = replay(state(10, 5), None, history=100)
    assert recovered is None
    assert [e.offset for e in entries] == [6, 7, 8, 9, 10]


def test_nothing_asked_nothing_replayed() -> None:
    assert replay(state(10, 5), None, None) == ([], None)


# Tracker ---------------------------------------------------------------------------


def test_first_message_sets_the_baseline() -> None:
    tracker = Tracker()
    assert tracker.accept(entry(5)) == ([entry(5)], False)
    assert tracker.accept(entry(6)) == ([entry(6)], False)


def test_duplicate_is_dropped() -> None:
    tracker = Tracker()
    tracker.observe(Position(3, E))
    assert tracker.accept(entry(4)) == ([entry(4)], False)
    assert tracker.accept(entry(4)) == ([], False)
    assert tracker.accept(entry(3)) == ([], False)


def test_messages_in_flight_at_the_baseline_are_still_delivered() -> None:
    """A baseline read may overtake messages already published to this server."""
    tracker = Tracker()
    tracker.observe(Position(5, E))
    assert tracker.accept(entry(4)) == ([entry(4)], False)
    assert tracker.accept(entry(5)) == ([entry(5)], False)
    assert tracker.accept(entry(6)) == ([entry(6)], False)
    assert tracker.accept(entry(6)) == ([], False)


def test_gap_is_held_then_filled_in_order() -> None:
    tracker = Tracker()
    tracker.observe(Position(2, E))
    assert tracker.accept(entry(5)) == ([], True)
    assert tracker.accept(entry(6)) == ([], False)  # held while filling
    out = tracker.filled(state(5, 5))
    assert offsets(out) == [3, 4, 5, 6]
    assert not tracker.filling
    assert tracker.accept(entry(7)) == ([entry(7)], False)


def test_gap_beyond_history_is_lost_then_continues() -> None:
    tracker = Tracker()
    tracker.observe(Position(2, E))
    tracker.accept(entry(20))
    out = tracker.filled(state(20, 5))
    assert out[0] == Lost(E, 15)
    assert offsets(out) == [16, 17, 18, 19, 20]


def test_refill_after_reconnect_delivers_what_was_missed_once() -> None:
    tracker = Tracker()
    tracker.observe(Position(4, E))
    assert tracker.refill() is True
    assert tracker.refill() is False  # one fill at a time
    tracker.accept(entry(8))  # live traffic on the new subscription is held
    out = tracker.filled(state(7, 7))
    assert offsets(out) == [5, 6, 7, 8]


def test_refill_with_nothing_known_needs_no_fill() -> None:
    assert Tracker().refill() is False


def test_new_epoch_is_announced() -> None:
    tracker = Tracker()
    tracker.observe(Position(9, E))
    out, fill = tracker.accept(entry(1, "new"))
    assert out == [Lost("new", 0), entry(1, "new")]
    assert fill is False


def test_new_epoch_with_a_gap_fills_from_one() -> None:
    tracker = Tracker()
    tracker.observe(Position(9, E))
    out, fill = tracker.accept(entry(3, "new"))
    assert out == [Lost("new", 0)] and fill
    assert offsets(tracker.filled(state(3, 3, "new"))) == [1, 2, 3]


def test_epoch_change_seen_by_the_fill() -> None:
    tracker = Tracker()
    tracker.observe(Position(9, E))
    tracker.refill()
    out = tracker.filled(state(2, 2, "new"))
    assert out[0] == Lost("new", 0)
    assert offsets(out) == [1, 2]


def test_a_second_gap_among_held_messages_fills_again() -> None:
    tracker = Tracker()
    tracker.observe(Position(1, E))
    tracker.accept(entry(3))
    tracker.accept(entry(6))  # 4 and 5 published after the read below
    out = tracker.filled(state(3, 3))
    assert offsets(out) == [2, 3]
    assert tracker.filling
    assert offsets(tracker.filled(state(6, 6))) == [4, 5, 6]


def test_held_messages_are_bounded() -> None:
    tracker = Tracker()
    tracker.observe(Position(0, E))
    tracker.accept(entry(2))
    for offset in range(3, HELD_LIMIT + 10):
        tracker.accept(entry(offset))
    assert len(tracker.held) == HELD_LIMIT
    # What was not held is read from the log by the next fills.
    out = tracker.filled(state(HELD_LIMIT + 9, HELD_LIMIT + 9))
    assert offsets(out) == list(range(1, HELD_LIMIT + 10))


@PROPERTY
@given(
    st.lists(st.sampled_from(["deliver", "drop", "duplicate", "break"]), max_size=60),
    st.integers(min_value=0, max_value=30),
)
def test_any_interleaving_delivers_every_kept_offset_once_in_order(
    events: list[str], size: int
) -> None:
    """Whatever pub/sub loses or repeats, a client sees increasing offsets, each
    once, with every message still kept delivered and the rest covered by Lost."""
    tracker = Tracker()
    tracker.observe(Position(0, E))
    top = 0
    out: list[Output] = []

    def log() -> StreamState:
        return state(top, min(top, size))

    for event in events:
        if event == "break":
            if tracker.refill():
                out += tracker.filled(log())
            continue
        top += 1
        if event == "drop":
            continue  # published, kept, never received live
        got, fill = tracker.accept(entry(top))
        out += got
        if event == "duplicate":
            got, more = tracker.accept(entry(top))
            out += got
            fill = fill or more
        if fill:
            out += tracker.filled(log())
    if tracker.refill():
        out += tracker.filled(log())
    seen = offsets(out)
    assert seen == sorted(set(seen))
    lost_through = max([item.offset for item in out if isinstance(item, Lost)], default=0)
    assert [o for o in range(1, top + 1) if o > lost_through] == [
        o for o in seen if o > lost_through
    ]


# Floors in the room table ----------------------------------------------------------


def test_joiner_gets_nothing_at_or_below_its_floor() -> None:
    table: RoomTable[str] = RoomTable()
    table.add("r", "old")
    table.activate("r", "old", Position(0, E))
    table.add("r", "new")
    assert table.route("r", entry(4)) == ["old"]  # new is pending: buffered
    assert [e.offset for e in table.activate("r", "new", Position(5, E))] == []
    assert table.route("r", entry(5)) == ["old"]  # late, at the floor
    assert table.route("r", entry(6)) == ["old", "new"]
    assert table.route("r", entry(5)) == ["old", "new"]  # the floor is gone once passed


def test_plain_events_pass_floors() -> None:
    table: RoomTable[str] = RoomTable()
    table.add("r", "m")
    table.activate("r", "m", Position(5, E))
    assert table.route("r", Entry(0, "", "joined")) == ["m"]
