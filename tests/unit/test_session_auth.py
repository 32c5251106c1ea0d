"""session and messages with authentication on: permissions, identity fields, Refresh."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wsproto_trio.core import messages
from wsproto_trio.core.claims import Claims, from_payload
from wsproto_trio.core.messages import (
    Hello,
    Inbound,
    JoinRoom,
    LeaveRoom,
    Refresh,
    SendMessage,
    SubmitMessage,
)
from wsproto_trio.core.session import Join, Publish, Reauthenticate, Reply, Session
from wsproto_trio.errors import (
    AlreadyJoined,
    Forbidden,
    InvalidMessage,
    InvalidToken,
    NotJoined,
    ProtocolError,
    UnknownType,
)

USER = "6f1c2b9e-0000-4000-8000-000000000001"


def session(payload: dict[str, Any] | None, *rooms: str) -> Session:
    claims = from_payload(payload) if payload is not None else None
    s = Session(USER, "s0", claims=claims)
    for room in rooms:
        assert isinstance(s.handle(JoinRoom(room)), Join)
    return s


def refused(s: Session, message: Inbound) -> type[ProtocolError]:
    with pytest.raises(ProtocolError) as info:
        s.handle(message)
    return type(info.value)


def contents(text: str) -> Any:
    return json.loads(text)["message"]["contents"]


def filled(template: messages.Template) -> Any:
    return contents(template.fill(1, "e"))


# Permissions and their order ------------------------------------------------------


def test_forbidden_comes_before_membership() -> None:
    s = session({"sub": "a", "rooms": ["team-*"], "send": ["team-a"]}, "team-b")
    assert refused(s, JoinRoom("ops")) is Forbidden
    assert refused(s, JoinRoom("team-b")) is AlreadyJoined
    assert refused(s, SendMessage("team-b", "hi")) is Forbidden  # joined, may not send
    assert refused(s, SendMessage("ops", "hi")) is Forbidden  # not joined either
    assert refused(s, SendMessage("team-a", "hi")) is NotJoined  # may send, not joined
    assert s.handle(LeaveRoom("team-b")) is not None  # leaving is never forbidden


def test_forbidden_join_does_not_count_as_joined() -> None:
    s = session({"sub": "a", "rooms": []})
    assert refused(s, JoinRoom("lobby")) is Forbidden
    assert s.rooms == set()


def test_chat_false() -> None:
    s = session({"sub": "a", "chat": False})
    assert refused(s, SubmitMessage("hi")) is Forbidden
    assert isinstance(s.handle(JoinRoom("lobby")), Join)


def test_anonymous() -> None:
    s = Session(USER, "s0", claims=Claims.anonymous())
    for message in (JoinRoom("r"), SendMessage("r", "m"), SubmitMessage("c")):
        assert refused(s, message) is Forbidden
    assert contents(s.welcome()) == {"user": USER, "server": "s0", "sub": None, "exp": None}


def test_auth_off_allows_everything_and_adds_no_fields() -> None:
    s = session(None, "r")
    action = s.handle(SendMessage("r", "m"))
    assert isinstance(action, Publish)
    assert "sub" not in filled(action.message)
    assert contents(s.welcome()) == {"user": USER, "server": "s0"}
    assert s.identity == {} and s.profile == {}
    assert refused(s, Refresh("token")) is UnknownType


# Identity fields ------------------------------------------------------------------


def test_identity_fields() -> None:
    s = session({"sub": "alice", "exp": 2000000000, "info": {"n": 1}}, "r")
    send = s.handle(SendMessage("r", "m"))
    chat = s.handle(SubmitMessage("c"))
    assert isinstance(send, Publish) and isinstance(chat, Publish)
    assert filled(send.message)["sub"] == "alice" and "info" not in filled(send.message)
    assert filled(chat.message)["sub"] == "alice" and "info" not in filled(chat.message)
    reply = s.handle(Hello())
    assert isinstance(reply, Reply)
    assert contents(reply.payload) == {
        "user": USER,
        "server": "s0",
        "sub": "alice",
        "exp": 2000000000,
    }
    assert s.identity == {"sub": "alice"}
    assert s.profile == {"sub": "alice", "info": {"n": 1}}


def test_member_record_and_announcements() -> None:
    profile: messages.Identity = {"sub": "alice", "info": {"name": "Al"}}
    assert json.loads(messages.member_record(USER, profile)) == {"user": USER, **profile}
    assert contents(messages.joined_room("r", USER, profile))["info"] == {"name": "Al"}
    assert contents(messages.expiring(1800000000)) == {"exp": 1800000000}


# Refresh --------------------------------------------------------------------------


def test_refresh_decodes_and_hides_the_token() -> None:
    text = json.dumps(
        {"channel": "session", "message": {"type": "Refresh", "contents": {"token": "sekrit"}}}
    )
    message = messages.decode(text)
    assert message == Refresh("sekrit")
    assert "sekrit" not in repr(message)
    action = session({"sub": "a"}).handle(message)
    assert action == Reauthenticate("sekrit") and "sekrit" not in repr(action)


@pytest.mark.parametrize("bad", [None, "tok", {}, {"token": 5}, {"token": ""}, {"token": None}])
def test_refresh_without_a_string_token(bad: object) -> None:
    text = json.dumps({"channel": "session", "message": {"type": "Refresh", "contents": bad}})
    with pytest.raises(InvalidMessage):
        messages.decode(text)


def test_refresh_applies_new_claims_and_names_rooms_to_leave() -> None:
    s = session({"sub": "alice"}, "lobby", "team-a", "ops")
    leave = s.refresh(from_payload({"sub": "alice", "exp": 5, "rooms": ["team-*"]}))
    assert leave == ["lobby", "ops"]
    assert s.rooms == {"team-a"}
    assert refused(s, JoinRoom("lobby")) is Forbidden
    assert contents(s.welcome())["exp"] == 5


def test_refresh_other_subject_changes_nothing() -> None:
    s = session({"sub": "alice", "rooms": ["a"]}, "a")
    with pytest.raises(InvalidToken):
        s.refresh(from_payload({"sub": "mallory"}))
    assert s.rooms == {"a"}
    assert s.identity == {"sub": "alice"}
    assert refused(s, JoinRoom("b")) is Forbidden
