"""The client's rules without sockets: positions, dedupe, recovery, request matching."""

from __future__ import annotations

import random
from typing import Any

import pytest

from wsproto_trio.client.events import (
    ChatMessage,
    Connected,
    Disconnected,
    Error,
    Expiring,
    Joined,
    Left,
    Lost,
    MemberList,
    Other,
    Position,
    Reconnected,
    RoomMessage,
    StreamOutcome,
)
from wsproto_trio.client.state import NO_EPOCH, ClientState, Status
from wsproto_trio.client.wire import Envelope, contents, kind

URL = "ws://a/websockets"


def env(channel: str, type_: str, body: Any = None) -> Envelope:
    return {"channel": channel, "message": {"type": type_, "contents": body}}


def welcome(user: str = "u1", server: str = "s1") -> Envelope:
    return env("session", "Welcome", {"user": user, "server": server})


def position(offset: int, epoch: str = "E", recovered: bool | None = None) -> Envelope:
    body: dict[str, Any] = {"offset": offset, "epoch": epoch}
    if recovered is not None:
        body["recovered"] = recovered
    return env("chat", "Position", body)


def chat(offset: int, epoch: str = "E", content: str | None = None) -> Envelope:
    return env(
        "chat",
        "NewMessageReceived",
        {
            "content": content or f"m{offset}",
            "postedAt": "2026-01-01T00:00:00.000000Z",
            "offset": offset,
            "epoch": epoch,
        },
    )


def member_list(
    room: str, users: list[str], offset: int, epoch: str = "R", recovered: bool | None = None
) -> Envelope:
    body: dict[str, Any] = {"room": room, "users": users, "offset": offset, "epoch": epoch}
    if recovered is not None:
        body["recovered"] = recovered
    return env("chat-room", "MemberList", body)


def room_message(room: str, offset: int, epoch: str = "R", user: str = "u2") -> Envelope:
    body = {"room": room, "user": user, "message": f"r{offset}", "offset": offset, "epoch": epoch}
    return env("chat-room", "NewMessage", body)


def kinds(envelopes: list[Envelope]) -> list[tuple[str, str]]:
    return [kind(e) for e in envelopes]


def connect(state: ClientState, now: float = 0.0, user: str = "u1") -> list[Any]:
    """Open a connection and answer its first Hello."""
    state.query()
    state.opened(URL, now)
    assert kinds(state.take_requests(now))[0] == ("session", "Hello")
    return state.receive(welcome(user), now)


def joined_state(room: str = "r", top: int = 3) -> ClientState:
    """A connected client in ``room`` at offset ``top`` of epoch R, chat at 5 of E."""
    state = ClientState(rng=random.Random(1))
    state.query()
    state.opened(URL, 0.0)
    state.take_requests(0.0)
    state.receive(position(5), 0.0)
    state.receive(welcome(), 0.0)
    state.join(room)
    state.take_requests(0.0)
    state.receive(welcome(), 0.0)  # the barrier
    state.receive(member_list(room, ["u1"], top), 0.0)
    return state


def test_first_connection_asks_for_a_chat_position_without_replay() -> None:
    state = ClientState()
    assert state.query() == {"chat_epoch": NO_EPOCH, "chat_offset": "0"}
    state.opened(URL, 0.0)
    assert state.receive(position(7, recovered=False), 0.0) == []
    assert state.position() == Position(7, "E")
    events = state.receive(welcome(), 0.0)
    assert events == [Connected(URL, "u1", "s1")]
    assert state.receive(chat(8), 0.0) == [ChatMessage("m8", "2026-01-01T00:00:00.000000Z", 8, "E")]


def test_chat_history_at_first_connection_is_flagged_as_replayed() -> None:
    state = ClientState(chat_history=2)
    assert state.query()["chat_history"] == "2"
    state.opened(URL, 0.0)
    state.receive(position(7, recovered=False), 0.0)
    replay = [e for o in (6, 7) for e in state.receive(chat(o), 0.0)]
    assert [e.replayed for e in replay if isinstance(e, ChatMessage)] == [True, True]
    live = state.receive(chat(8), 0.0)
    assert isinstance(live[0], ChatMessage) and not live[0].replayed


def test_without_recovery_no_parameters_and_no_since() -> None:
    state = ClientState(recover=False)
    assert state.query() == {}
    state.opened(URL, 0.0)
    state.take_requests(0.0)
    state.receive(welcome(), 0.0)
    state.join("r")
    sent = state.take_requests(0.0)
    assert contents(sent[-1]) == {"room": "r"}


def test_duplicates_are_dropped_and_counted() -> None:
    state = joined_state()
    assert len(state.receive(chat(6), 0.0)) == 1
    assert state.receive(chat(6), 0.0) == []
    assert state.receive(chat(4), 0.0) == []
    assert state.stats.duplicates == 2
    assert len(state.receive(room_message("r", 4), 0.0)) == 1
    assert state.receive(room_message("r", 3), 0.0) == []
    assert state.stats.gaps == 0


def test_a_jump_without_lost_counts_as_a_gap() -> None:
    state = joined_state()
    state.receive(chat(9), 0.0)
    assert state.stats.gaps == 1


def test_lost_notice_moves_the_position() -> None:
    state = joined_state()
    assert state.receive(env("chat", "Lost", {"epoch": "F", "offset": 20}), 0.0) == [
        Lost(None, "F", 20)
    ]
    assert state.position() == Position(20, "F")
    lost = env("chat-room", "Lost", {"room": "r", "epoch": "R", "offset": 9})
    assert state.receive(lost, 0.0) == [Lost("r", "R", 9)]
    assert state.position("r") == Position(9, "R")
    assert len(state.receive(room_message("r", 10), 0.0)) == 1
    assert state.stats.gaps == 0


def test_member_set_follows_joins_and_leaves() -> None:
    state = joined_state()
    assert state.members("r") == {"u1"}
    assert state.receive(env("chat-room", "JoinedRoom", {"room": "r", "user": "u2"}), 0.0) == [
        Joined("r", "u2")
    ]
    assert state.members("r") == {"u1", "u2"}
    state.receive(env("chat-room", "LeftRoom", {"room": "r", "user": "u2"}), 0.0)
    assert state.members("r") == {"u1"}


def test_traffic_of_a_room_not_joined_is_other() -> None:
    state = joined_state()
    events = state.receive(room_message("elsewhere", 1), 0.0)
    assert len(events) == 1 and isinstance(events[0], Other)
    assert isinstance(state.receive(env("x", "Y", 1), 0.0)[0], Other)


def test_rejoin_recovers_and_reconnected_comes_after_the_replay() -> None:
    state = joined_state(top=3)
    state.receive(room_message("r", 4), 1.0)
    assert state.closed(1006, "gone", 2.0) == [Disconnected(URL, 1006, "gone")]
    assert state.rooms["r"].status is Status.WANTED
    assert state.query() == {"chat_epoch": "E", "chat_offset": "5"}
    state.opened(URL, 3.0)
    sent = state.take_requests(3.0)
    assert kinds(sent) == [("session", "Hello"), ("chat-room", "JoinRoom")]
    assert contents(sent[-1]) == {"room": "r", "since": {"offset": 4, "epoch": "R"}}
    assert state.receive(position(6, recovered=True), 3.0) == []
    assert state.receive(welcome("u9"), 3.0)[0] == Connected(URL, "u9", "s1", reconnect=True)
    replayed_chat = state.receive(chat(6), 3.0)
    assert isinstance(replayed_chat[0], ChatMessage) and replayed_chat[0].replayed
    events = state.receive(member_list("r", ["u9"], 6, recovered=True), 3.0)
    assert isinstance(events[0], MemberList) and events[0].recovered is True
    assert not any(isinstance(e, Reconnected) for e in events)
    state.receive(room_message("r", 5), 3.5)
    last = state.receive(room_message("r", 6), 4.0)
    assert isinstance(last[0], RoomMessage) and last[0].replayed
    assert isinstance(last[1], Reconnected)
    reconnected = last[1]
    assert reconnected.recovered and reconnected.replayed == 3
    assert reconnected.down_for == 2.0
    assert reconnected.streams == (
        StreamOutcome(None, True, 1),
        StreamOutcome("r", True, 2),
    )
    assert state.stats.reconnects == 1


def test_failed_recovery_is_lost_and_history_fills_from_the_new_epoch() -> None:
    state = ClientState(rng=random.Random(1))
    connect(state)
    state.join("r", history=2)
    state.take_requests(0.0)
    state.receive(welcome(), 0.0)
    state.receive(member_list("r", ["u1"], 3), 0.0)
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    sent = state.take_requests(1.0)
    assert contents(sent[-1]) == {
        "room": "r",
        "since": {"offset": 0, "epoch": "R"},
        "history": 2,
    }
    state.receive(position(0, recovered=True), 1.0)
    state.receive(welcome(), 1.0)
    events = state.receive(member_list("r", ["u1"], 8, epoch="NEW", recovered=False), 1.0)
    assert events[1] == Lost("r", "NEW", 8, "recovery")
    reconnected = events[-1]
    assert isinstance(reconnected, Reconnected) and not reconnected.recovered
    assert reconnected.streams[1] == StreamOutcome("r", False, 0, Lost("r", "NEW", 8, "recovery"))
    history = state.receive(room_message("r", 7, "NEW"), 1.0)
    assert isinstance(history[0], RoomMessage) and history[0].replayed
    assert state.position("r") == Position(7, "NEW")


def test_failed_recovery_without_history_continues_after_the_top() -> None:
    state = joined_state()
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    state.take_requests(1.0)
    state.receive(position(5, recovered=True), 1.0)
    state.receive(welcome(), 1.0)
    state.receive(member_list("r", ["u1"], 50, recovered=False), 1.0)
    assert state.position("r") == Position(50, "R")
    assert state.receive(room_message("r", 50), 1.0) == []


def test_errors_before_the_barrier_are_not_the_joins() -> None:
    state = joined_state()
    state.join("b")
    sent = state.take_requests(1.0)
    assert kinds(sent) == [("session", "Hello"), ("chat-room", "JoinRoom")]
    early = state.receive(env("error", "Error", {"code": "rate_limited", "detail": "x"}), 1.0)
    assert early == [Error("rate_limited", "x")]
    assert state.rooms["b"].status is Status.JOINING
    state.receive(welcome(), 1.0)
    events = state.receive(env("error", "Error", {"code": "unavailable", "detail": "d"}), 1.0)
    assert events == [Error("unavailable", "d", "b")]
    room = state.rooms["b"]
    assert room.status is Status.WANTED and room.retry_at > 1.0
    assert state.take_requests(1.0) == []
    deadline = state.next_deadline()
    assert deadline is not None
    again = state.take_requests(deadline)
    assert kinds(again) == [("session", "Hello"), ("chat-room", "JoinRoom")]


def test_a_permanent_join_error_drops_the_room() -> None:
    state = joined_state()
    state.join("secret")
    state.take_requests(1.0)
    state.receive(welcome(), 1.0)
    events = state.receive(env("error", "Error", {"code": "forbidden", "detail": "no"}), 1.0)
    assert events == [Error("forbidden", "no", "secret")]
    assert "secret" not in state.rooms
    assert state.failures["secret"] == Error("forbidden", "no", "secret")


def test_a_rejoin_refused_for_good_is_in_the_outcome() -> None:
    state = joined_state()
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    state.take_requests(1.0)
    state.receive(position(5, recovered=True), 1.0)
    state.receive(welcome(), 1.0)
    events = state.receive(env("error", "Error", {"code": "forbidden", "detail": "no"}), 1.0)
    reconnected = events[-1]
    assert isinstance(reconnected, Reconnected)
    assert reconnected.streams[1] == StreamOutcome("r", False, error="forbidden")


def test_leave_while_joining_waits_for_the_member_list() -> None:
    state = joined_state()
    state.join("b")
    state.take_requests(1.0)
    state.leave("b")
    state.receive(welcome(), 1.0)
    state.receive(member_list("b", ["u1"], 0), 1.0)
    assert kinds(state.take_requests(1.0)) == [("chat-room", "LeaveRoom")]
    assert state.rooms["b"].status is Status.LEAVING
    events = state.receive(env("chat-room", "LeftRoom", {"room": "b", "user": "u1"}), 1.0)
    assert events == [Left("b", "u1")]
    assert "b" not in state.rooms


def test_leave_of_a_room_not_on_the_server_is_immediate() -> None:
    state = joined_state()
    state.closed(None, "cut", 1.0)
    state.leave("r")
    assert "r" not in state.rooms
    with pytest.raises(ValueError):
        state.leave("r")


def test_a_leave_we_did_not_ask_for_starts_over_on_a_new_connection() -> None:
    state = joined_state()
    events = state.receive(env("chat-room", "LeftRoom", {"room": "r", "user": "u1"}), 1.0)
    assert events == [] and state.drop_reason is not None
    state.closed(None, "dropped", 2.0)
    assert state.rooms["r"].status is Status.WANTED
    state.query()
    state.opened(URL, 2.0)
    sent = state.take_requests(2.0)
    assert contents(sent[-1]) == {"room": "r", "since": {"offset": 3, "epoch": "R"}}


def test_an_unanswered_request_drops_the_connection() -> None:
    state = ClientState(request_timeout=5.0)
    state.query()
    state.opened(URL, 0.0)
    state.take_requests(0.0)
    assert state.tick(4.0) == ([], False)
    assert state.next_deadline() == 5.0
    assert state.tick(5.0) == ([], True)


def test_a_replay_that_never_ends_is_reported_as_timeout() -> None:
    state = joined_state()
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    state.take_requests(1.0)
    state.receive(position(9, recovered=True), 1.0)  # 6..9 never come
    state.receive(welcome(), 1.0)
    state.receive(member_list("r", ["u1"], 3, recovered=True), 1.0)
    events, abort = state.tick(1.0 + state.request_timeout)
    assert not abort
    reconnected = events[0]
    assert isinstance(reconnected, Reconnected)
    assert reconnected.streams[0].error == "timeout" and not reconnected.recovered


def test_without_recovery_reconnected_says_unknown() -> None:
    state = ClientState(recover=False)
    connect(state)
    state.join("r")
    state.take_requests(0.0)
    state.receive(welcome(), 0.0)
    state.receive(member_list("r", ["u1"], 3), 0.0)
    state.closed(None, "cut", 1.0)
    assert state.query() == {}
    state.opened(URL, 1.0)
    sent = state.take_requests(1.0)
    assert contents(sent[-1]) == {"room": "r"}
    state.receive(welcome(), 1.0)
    events = state.receive(member_list("r", ["u1"], 9), 1.0)
    reconnected = events[-1]
    assert isinstance(reconnected, Reconnected)
    assert reconnected.streams == (StreamOutcome(None, None), StreamOutcome("r", None))


def test_expiring_asks_for_a_refresh_and_matches_its_answer() -> None:
    state = joined_state()
    assert state.receive(env("session", "Expiring", {"exp": 100}), 1.0) == [Expiring(100.0)]
    assert state.refresh_wanted
    sent = state.take_refresh("new-token", 1.0)
    assert kinds(sent) == [("session", "Hello"), ("session", "Refresh")]
    assert contents(sent[1]) == {"token": "new-token"}
    state.receive(welcome(), 1.0)  # the barrier
    bad = state.receive(env("error", "Error", {"code": "invalid_token", "detail": "x"}), 1.0)
    assert bad == [Error("invalid_token", "x")]
    assert state.next_deadline() is None


def test_misuse_is_value_error() -> None:
    state = joined_state()
    with pytest.raises(ValueError):
        state.join("r")
    with pytest.raises(ValueError):
        state.join("x", history=0)
    with pytest.raises(ValueError):
        ClientState(chat_history=0)


def test_a_rejoin_retried_past_the_deadline_still_recovers() -> None:
    state = joined_state(top=3)
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    state.take_requests(1.0)
    state.receive(position(5, recovered=True), 1.0)
    state.receive(welcome(), 1.0)
    unavailable = env("error", "Error", {"code": "unavailable", "detail": "redis"})
    state.receive(unavailable, 1.0)
    later = 1.0 + 3 * state.request_timeout
    assert state.tick(later) == ([], False)
    again = state.take_requests(later)
    assert contents(again[-1]) == {"room": "r", "since": {"offset": 3, "epoch": "R"}}
    state.receive(welcome(), later)
    events = state.receive(member_list("r", ["u1"], 3, recovered=True), later)
    reconnected = events[-1]
    assert isinstance(reconnected, Reconnected) and reconnected.recovered


def test_no_chat_position_at_connect_drops_the_connection() -> None:
    state = joined_state()
    state.closed(None, "cut", 1.0)
    state.query()
    state.opened(URL, 1.0)
    state.take_requests(1.0)
    unavailable = env("error", "Error", {"code": "unavailable", "detail": "chat position"})
    assert state.receive(unavailable, 1.0) == [Error("unavailable", "chat position")]
    assert state.drop_reason is not None
    state.closed(None, "dropped", 1.5)
    state.query()
    state.opened(URL, 2.0)
    assert state.drop_reason is None
    state.receive(position(5, recovered=True), 2.0)
    state.take_requests(2.0)
    state.receive(welcome(), 2.0)
    state.receive(unavailable, 2.0)  # now it is the rejoin's answer
    assert state.drop_reason is None and state.rooms["r"].status is Status.WANTED
