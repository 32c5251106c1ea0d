"""session: what one connection's inbound message means, and the rate limiter."""

from __future__ import annotations

import json
import re

import pytest

from wsproto_trio.config import RateLimit
from wsproto_trio.core import messages
from wsproto_trio.core.messages import (
    Hello,
    Inbound,
    JoinRoom,
    LeaveRoom,
    SendMessage,
    SubmitMessage,
)
from wsproto_trio.core.session import Join, Leave, Publish, RateLimiter, Reply, Session, Verdict
from wsproto_trio.errors import AlreadyJoined, NotJoined, ProtocolError

USER = "6f1c2b9e-0000-4000-8000-000000000001"
SERVER = "server-a"
ROOMS = ["lobby", "caf\u00e9 \U0001f600", "a:b", "x" * 100]


def session(*rooms: str) -> Session:
    s = Session(user_id=USER, server_id=SERVER)
    for room in rooms:
        assert s.handle(JoinRoom(room)) == Join(room)
    return s


def refused(s: Session, message: Inbound) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        s.handle(message)
    return info.value


# Rooms ----------------------------------------------------------------------------


@pytest.mark.parametrize("room", ROOMS)
def test_join_returns_join_and_counts_as_joined(room: str) -> None:
    s = Session(user_id=USER, server_id=SERVER)
    assert s.handle(JoinRoom(room)) == Join(room)
    assert s.rooms == {room}


@pytest.mark.parametrize("room", ROOMS)
def test_join_twice_is_already_joined(room: str) -> None:
    s = session(room)
    exc = refused(s, JoinRoom(room))
    assert isinstance(exc, AlreadyJoined)
    assert exc.code == "already_joined"
    assert s.rooms == {room}


def test_join_other_rooms_independently() -> None:
    s = session("a", "b")
    assert s.handle(JoinRoom("c")) == Join("c")
    assert s.rooms == {"a", "b", "c"}
    assert refused(s, JoinRoom("b")).code == "already_joined"


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(LeaveRoom("lobby"), id="leave"),
        pytest.param(SendMessage("lobby", "hi"), id="send"),
    ],
)
@pytest.mark.parametrize(
    "joined", [(), ("other",), ("Lobby", "lobby ")], ids=["none", "other", "lookalikes"]
)
def test_outside_the_room_is_not_joined(message: Inbound, joined: tuple[str, ...]) -> None:
    s = session(*joined)
    exc = refused(s, message)
    assert isinstance(exc, NotJoined)
    assert exc.code == "not_joined"
    assert s.rooms == set(joined)


@pytest.mark.parametrize("room", ROOMS)
def test_join_leave_leave(room: str) -> None:
    s = session(room)
    assert s.handle(LeaveRoom(room)) == Leave(room)
    assert s.rooms == set()
    assert refused(s, LeaveRoom(room)).code == "not_joined"
    assert refused(s, SendMessage(room, "hi")).code == "not_joined"


@pytest.mark.parametrize("room", ROOMS)
def test_rejoin_after_leave(room: str) -> None:
    s = session(room)
    s.handle(LeaveRoom(room))
    assert s.handle(JoinRoom(room)) == Join(room)
    assert s.rooms == {room}


def test_forget_undoes_a_failed_join() -> None:
    s = session("lobby", "other")
    s.forget("lobby")
    assert s.rooms == {"other"}
    assert refused(s, SendMessage("lobby", "hi")).code == "not_joined"
    assert s.handle(JoinRoom("lobby")) == Join("lobby")


def test_forget_unknown_room_is_a_no_op() -> None:
    s = session("lobby")
    s.forget("never-joined")
    assert s.rooms == {"lobby"}


# Publishing and replies -----------------------------------------------------------

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


@pytest.mark.parametrize("content", ["hello", "line\nline", "caf\u00e9 \U0001f600", " "])
def test_submit_message_publishes_on_chat(content: str) -> None:
    action = session().handle(SubmitMessage(content))
    assert isinstance(action, Publish)
    assert action.channel == "chat"
    payload = action.message.fill(1, "e")
    assert "\n" not in payload
    envelope = json.loads(payload)
    assert envelope["channel"] == "chat"
    assert envelope["message"]["type"] == "NewMessageReceived"
    contents = envelope["message"]["contents"]
    assert set(contents) == {"content", "postedAt", "offset", "epoch"}
    assert contents["content"] == content
    assert RFC3339_UTC.match(contents["postedAt"])


def test_submit_message_needs_no_room() -> None:
    s = session()
    assert isinstance(s.handle(SubmitMessage("x")), Publish)
    assert s.rooms == set()


@pytest.mark.parametrize("room", ROOMS)
@pytest.mark.parametrize("text", ["hi", "line\nline", "\U0001f600"])
def test_send_message_publishes_on_room_channel(room: str, text: str) -> None:
    action = session(room).handle(SendMessage(room, text))
    assert action == Publish(f"room:{room}", messages.new_message(room, USER, text))
    assert isinstance(action, Publish)
    assert json.loads(action.message.fill(3, "e")) == {
        "channel": "chat-room",
        "message": {
            "type": "NewMessage",
            "contents": {"room": room, "user": USER, "message": text, "offset": 3, "epoch": "e"},
        },
    }


def test_send_message_user_is_the_session_user() -> None:
    for user in ("u-1", "u-2"):
        s = Session(user_id=user, server_id=SERVER)
        s.handle(JoinRoom("lobby"))
        action = s.handle(SendMessage("lobby", "hi"))
        assert isinstance(action, Publish)
        assert json.loads(action.message.fill(1, "e"))["message"]["contents"]["user"] == user


@pytest.mark.parametrize("rooms", [(), ("lobby",)])
def test_hello_replies_welcome(rooms: tuple[str, ...]) -> None:
    action = session(*rooms).handle(Hello())
    assert action == Reply(messages.welcome(USER, SERVER))
    assert json.loads(action.payload) == {
        "channel": "session",
        "message": {"type": "Welcome", "contents": {"user": USER, "server": SERVER}},
    }


# RateLimiter ----------------------------------------------------------------------

LIMITS = [
    pytest.param(RateLimit(rate=100.0, burst=200.0), id="default-100/s"),
    pytest.param(RateLimit(rate=10.0, burst=20.0), id="600/m"),
    pytest.param(RateLimit(rate=5.0, burst=3.0), id="small-burst"),
    pytest.param(RateLimit(rate=1.0, burst=1.0), id="one"),
]


def run(limiter: RateLimiter, start: float, interval: float, count: int) -> list[Verdict]:
    """``count`` messages, one every ``interval`` seconds from ``start``."""
    return [limiter.check(start + i * interval) for i in range(count)]


@pytest.mark.parametrize("limit", LIMITS)
def test_burst_allowed_then_limited(limit: RateLimit) -> None:
    limiter = RateLimiter(limit, now=100.0)
    burst = int(limit.burst)
    verdicts = run(limiter, 100.0, 0.0, burst + 1)
    assert verdicts == [Verdict.ALLOW] * burst + [Verdict.LIMITED]


@pytest.mark.parametrize("limit", LIMITS)
def test_refill_over_time(limit: RateLimit) -> None:
    limiter = RateLimiter(limit, now=0.0)
    run(limiter, 0.0, 0.0, int(limit.burst))
    assert limiter.check(0.0) is Verdict.LIMITED
    # One token comes back after 1/rate seconds: one message, then limited again.
    t = 1.0 / limit.rate
    assert limiter.check(t) is Verdict.ALLOW
    assert limiter.check(t) is Verdict.LIMITED
    # A long pause refills the bucket, but no deeper than the burst.
    t += 1000.0
    assert run(limiter, t, 0.0, int(limit.burst) + 1) == [Verdict.ALLOW] * int(limit.burst) + [
        Verdict.LIMITED
    ]


@pytest.mark.parametrize("limit", LIMITS)
def test_sending_at_the_rate_is_always_allowed(limit: RateLimit) -> None:
    limiter = RateLimiter(limit, now=0.0)
    verdicts = run(limiter, 1.0, 1.0 / limit.rate, 5000)
    assert set(verdicts) == {Verdict.ALLOW}


@pytest.mark.parametrize("factor", [3.0, 4.0, 10.0, 100.0])
@pytest.mark.parametrize("limit", LIMITS)
def test_sending_far_over_the_rate_turns_abusive(limit: RateLimit, factor: float) -> None:
    limiter = RateLimiter(limit, now=0.0)
    interval = 1.0 / (limit.rate * factor)
    first_abusive = None
    for i in range(1, 1_000_000):
        now = i * interval
        verdict = limiter.check(now)
        if verdict is Verdict.ABUSIVE:
            first_abusive = now
            break
    assert first_abusive is not None
    # Sustained abuse, not a single burst: the message bucket empties at
    # (factor - 1) * rate, then the refusal bucket (burst deep, refilled at the
    # rate) at (factor - 2) * rate.
    expected = limit.burst / ((factor - 1.0) * limit.rate) + limit.burst / (
        (factor - 2.0) * limit.rate
    )
    assert 0.5 * expected <= first_abusive <= expected + 2.0 / limit.rate


@pytest.mark.parametrize("factor", [1.0, 1.25, 1.5, 1.9])
@pytest.mark.parametrize("limit", LIMITS)
def test_sending_under_twice_the_rate_is_never_abusive(limit: RateLimit, factor: float) -> None:
    limiter = RateLimiter(limit, now=0.0)
    seconds = 2000.0 / limit.rate  # long enough for thousands of messages
    count = int(seconds * limit.rate * factor)
    verdicts = run(limiter, 0.0, 1.0 / (limit.rate * factor), count)
    assert Verdict.ABUSIVE not in verdicts
    allowed = verdicts.count(Verdict.ALLOW)
    assert allowed <= limit.burst + seconds * limit.rate + 1  # never more than the rate
    if factor > 1.0:
        assert Verdict.LIMITED in verdicts
    if factor > 1.0 and limit.burst >= 2:
        # With room for two tokens none of the refill is lost to the cap, so the
        # client still gets `rate` messages a second through.
        assert allowed == pytest.approx(limit.burst + seconds * limit.rate, rel=0.02)


@pytest.mark.parametrize("limit", LIMITS)
def test_bursting_now_and_then_is_never_abusive(limit: RateLimit) -> None:
    """Twice the burst at once, then a long pause: limited, never abusive."""
    limiter = RateLimiter(limit, now=0.0)
    for cycle in range(50):
        verdicts = run(limiter, cycle * 10.0 * limit.burst / limit.rate, 0.0, 2 * int(limit.burst))
        assert Verdict.ABUSIVE not in verdicts
        assert Verdict.LIMITED in verdicts


@pytest.mark.parametrize(
    "limit",
    [RateLimit(rate=0.0, burst=0.0), RateLimit(rate=0.0, burst=200.0)],
    ids=["off", "off-with-burst"],
)
def test_disabled_limit_always_allows(limit: RateLimit) -> None:
    assert not limit.enabled
    limiter = RateLimiter(limit, now=0.0)
    assert set(run(limiter, 0.0, 0.0, 10_000)) == {Verdict.ALLOW}
    assert set(run(limiter, 1.0, 1e-6, 10_000)) == {Verdict.ALLOW}


def test_clock_going_backwards_does_not_refill() -> None:
    limiter = RateLimiter(RateLimit(rate=10.0, burst=2.0), now=50.0)
    assert run(limiter, 50.0, 0.0, 3) == [Verdict.ALLOW, Verdict.ALLOW, Verdict.LIMITED]
    assert limiter.check(10.0) is Verdict.LIMITED
