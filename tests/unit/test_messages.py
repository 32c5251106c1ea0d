"""messages: decoding inbound envelopes, validating them, encoding outbound ones.

Example-based tables; the properties (no input raises anything but a
``ProtocolError``) are in ``test_messages_properties.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from wsproto_trio.core import messages
from wsproto_trio.core.messages import (
    Hello,
    Inbound,
    JoinRoom,
    LeaveRoom,
    SendMessage,
    SubmitMessage,
    decode,
    split_frame,
)
from wsproto_trio.core.positions import Position
from wsproto_trio.errors import ProtocolError

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
ROOM_KINDS = ("JoinRoom", "LeaveRoom", "SendMessage")


def env(channel: object, kind: object, contents: object = None) -> str:
    """An inbound envelope; ``json.dumps`` spells lone surrogates as ``\\udXXX`` escapes."""
    return json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})


def room_env(kind: str, room: object) -> str:
    contents: dict[str, object] = {"room": room}
    if kind == "SendMessage":
        contents["message"] = "hi"
    return env("chat-room", kind, contents)


def expected_room_message(kind: str, room: str) -> Inbound:
    if kind == "JoinRoom":
        return JoinRoom(room)
    if kind == "LeaveRoom":
        return LeaveRoom(room)
    return SendMessage(room, "hi")


def leaves(value: object) -> list[object]:
    """Every scalar inside a decoded JSON value."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def refusal(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(text)
    return info.value


# decode: valid messages ---------------------------------------------------------

VALID = [
    pytest.param(env("chat", "SubmitMessage", "hello"), SubmitMessage("hello"), id="submit"),
    pytest.param(env("chat", "SubmitMessage", " "), SubmitMessage(" "), id="submit-space"),
    pytest.param(env("chat", "SubmitMessage", "a\nb"), SubmitMessage("a\nb"), id="submit-newline"),
    pytest.param(
        env("chat", "SubmitMessage", "caf\u00e9 \U0001f600"),
        SubmitMessage("caf\u00e9 \U0001f600"),
        id="submit-unicode-escaped",
    ),
    pytest.param(
        json.dumps(
            {
                "channel": "chat",
                "message": {"type": "SubmitMessage", "contents": "\u00e9\U0001f600"},
            },
            ensure_ascii=False,
        ),
        SubmitMessage("\u00e9\U0001f600"),
        id="submit-unicode-raw",
    ),
    pytest.param(
        '{"channel":"chat","message":{"type":"SubmitMessage","contents":"\\ud83d\\ude00"}}',
        SubmitMessage("\U0001f600"),
        id="submit-surrogate-pair-escape",
    ),
    pytest.param(
        ' \r\n\t{"channel":"chat","message":{"type":"SubmitMessage","contents":"x"}}\r\n ',
        SubmitMessage("x"),
        id="submit-json-whitespace-around",
    ),
    pytest.param(
        '{"message":{"contents":"x","type":"SubmitMessage"},"channel":"chat"}',
        SubmitMessage("x"),
        id="submit-keys-any-order",
    ),
    pytest.param(env("chat-room", "JoinRoom", {"room": "lobby"}), JoinRoom("lobby"), id="join"),
    pytest.param(env("chat-room", "LeaveRoom", {"room": "lobby"}), LeaveRoom("lobby"), id="leave"),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": "hi there"}),
        SendMessage("lobby", "hi there"),
        id="send",
    ),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": "line\nline"}),
        SendMessage("lobby", "line\nline"),
        id="send-newline",
    ),
    pytest.param(env("session", "Hello", None), Hello(), id="hello-null"),
    pytest.param(env("session", "Hello", {}), Hello(), id="hello-object"),
    pytest.param('{"channel":"session","message":{"type":"Hello"}}', Hello(), id="hello-bare"),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_decode_valid(text: str, expected: Inbound) -> None:
    result = decode(text)
    assert type(result) is type(expected)
    assert result == expected


# decode: refusals, one table per wire code --------------------------------------

VALID_SUBMIT = env("chat", "SubmitMessage", "hello")

INVALID_JSON = [
    pytest.param("not json", id="words"),
    pytest.param("", id="empty"),
    pytest.param("   \n", id="whitespace"),
    pytest.param("{", id="open-brace"),
    pytest.param('{"channel":"chat"', id="unterminated-object"),
    pytest.param(VALID_SUBMIT[:-1], id="truncated-envelope"),
    pytest.param(VALID_SUBMIT[: len(VALID_SUBMIT) // 2], id="half-envelope"),
    pytest.param(
        '{"channel":"chat","message":{"type":"SubmitMessage","contents":"x', id="open-str"
    ),
    pytest.param("[" * 100_000, id="deep-open-arrays"),
    pytest.param("[" * 100_000 + "]" * 100_000, id="deep-closed-arrays"),
    pytest.param('{"a":' * 100_000, id="deep-open-objects"),
    pytest.param("1" * 10_000, id="int-10000-digits"),
    pytest.param(
        '{"channel":"chat","message":{"type":"SubmitMessage","contents":' + "9" * 10_000 + "}}",
        id="int-10000-digits-inside",
    ),
    pytest.param("nan", id="nan-lowercase"),
    pytest.param("NaNa", id="nan-junk"),
    pytest.param("-nan", id="minus-nan"),
    pytest.param("Infinityy", id="infinity-junk"),
    pytest.param("inf", id="inf"),
    pytest.param("+1", id="plus-sign"),
    pytest.param("0x10", id="hex"),
    pytest.param("01", id="leading-zero"),
    pytest.param("undefined", id="undefined"),
    pytest.param("True", id="python-true"),
    pytest.param("None", id="python-none"),
    pytest.param("{'channel': 'chat'}", id="single-quotes"),
    pytest.param('{"channel":"chat",}', id="trailing-comma"),
    pytest.param('{channel:"chat"}', id="unquoted-key"),
    pytest.param("\ufeff" + VALID_SUBMIT, id="bom"),
    pytest.param(VALID_SUBMIT + "\x00", id="trailing-nul"),
    pytest.param(VALID_SUBMIT + VALID_SUBMIT, id="two-objects"),
    pytest.param(VALID_SUBMIT + "\n" + VALID_SUBMIT, id="two-envelopes-unbatched"),
    pytest.param('"\\ud80"', id="short-unicode-escape"),
    pytest.param('"\\x41"', id="bad-escape"),
    pytest.param('"tab\there"', id="raw-control-char-in-string"),
    pytest.param("\udcff\udcfe", id="surrogateescaped-bytes"),
]

INVALID_MESSAGE = [
    # Not an object at all.
    pytest.param("[]", id="empty-array"),
    pytest.param("[" + VALID_SUBMIT + "]", id="array-of-envelope"),
    pytest.param('"a string"', id="string"),
    pytest.param('"\\ud800"', id="string-lone-surrogate"),
    pytest.param("42", id="integer"),
    pytest.param("-3.5e2", id="float"),
    pytest.param("null", id="null"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    # The envelope's shape.
    pytest.param("{}", id="empty-object"),
    pytest.param('{"message":{"type":"SubmitMessage","contents":"x"}}', id="no-channel"),
    pytest.param(env(None, "SubmitMessage", "x"), id="channel-null"),
    pytest.param(env(5, "SubmitMessage", "x"), id="channel-number"),
    pytest.param(env(["chat"], "SubmitMessage", "x"), id="channel-array"),
    pytest.param(env({"name": "chat"}, "SubmitMessage", "x"), id="channel-object"),
    pytest.param('{"channel":"chat"}', id="no-message"),
    pytest.param('{"channel":"chat","message":null}', id="message-null"),
    pytest.param('{"channel":"chat","message":"SubmitMessage"}', id="message-string"),
    pytest.param('{"channel":"chat","message":["SubmitMessage","x"]}', id="message-array"),
    pytest.param('{"channel":"chat","message":7}', id="message-number"),
    pytest.param('{"channel":"chat","message":{}}', id="message-empty"),
    pytest.param('{"channel":"chat","message":{"contents":"x"}}', id="no-type"),
    pytest.param(env("chat", None, "x"), id="type-null"),
    pytest.param(env("chat", 1, "x"), id="type-number"),
    pytest.param(env("chat", ["SubmitMessage"], "x"), id="type-array"),
    pytest.param(env("chat", {"name": "SubmitMessage"}, "x"), id="type-object"),
    pytest.param(env("nowhere", 1, "x"), id="type-checked-before-channel"),
    # SubmitMessage contents.
    pytest.param('{"channel":"chat","message":{"type":"SubmitMessage"}}', id="submit-missing"),
    pytest.param(env("chat", "SubmitMessage", None), id="submit-null"),
    pytest.param(env("chat", "SubmitMessage", 5), id="submit-number"),
    pytest.param(env("chat", "SubmitMessage", True), id="submit-bool"),
    pytest.param(env("chat", "SubmitMessage", ["hi"]), id="submit-array"),
    pytest.param(env("chat", "SubmitMessage", {"content": "hi"}), id="submit-object"),
    pytest.param(env("chat", "SubmitMessage", ""), id="submit-empty"),
    pytest.param(env("chat", "SubmitMessage", "\ud800"), id="submit-lone-high-surrogate"),
    pytest.param(env("chat", "SubmitMessage", "\udfff"), id="submit-lone-low-surrogate"),
    pytest.param(env("chat", "SubmitMessage", "ok\ud800ok"), id="submit-embedded-surrogate"),
    pytest.param(env("chat", "SubmitMessage", "\ude00\ud83d"), id="submit-reversed-pair"),
    pytest.param(
        json.dumps(
            {"channel": "chat", "message": {"type": "SubmitMessage", "contents": "\ud800"}},
            ensure_ascii=False,
        ),
        id="submit-raw-surrogate",
    ),
    # Room message contents.
    pytest.param('{"channel":"chat-room","message":{"type":"JoinRoom"}}', id="join-missing"),
    pytest.param(env("chat-room", "JoinRoom", None), id="join-null"),
    pytest.param(env("chat-room", "JoinRoom", "lobby"), id="join-string"),
    pytest.param(env("chat-room", "JoinRoom", ["lobby"]), id="join-array"),
    pytest.param(env("chat-room", "JoinRoom", {}), id="join-no-room"),
    pytest.param(env("chat-room", "JoinRoom", {"room": None}), id="join-room-null"),
    pytest.param(env("chat-room", "JoinRoom", {"room": 5}), id="join-room-number"),
    pytest.param(env("chat-room", "JoinRoom", {"room": ["lobby"]}), id="join-room-array"),
    pytest.param(env("chat-room", "LeaveRoom", "lobby"), id="leave-string"),
    pytest.param(env("chat-room", "LeaveRoom", {"name": "lobby"}), id="leave-no-room"),
    pytest.param(env("chat-room", "SendMessage", "hi"), id="send-string"),
    pytest.param(env("chat-room", "SendMessage", {"room": "lobby"}), id="send-no-message"),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": None}), id="send-msg-null"
    ),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": 5}), id="send-msg-number"
    ),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": ["hi"]}), id="send-msg-array"
    ),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": ""}), id="send-msg-empty"
    ),
    pytest.param(
        env("chat-room", "SendMessage", {"room": "lobby", "message": "\ud800"}),
        id="send-msg-lone-surrogate",
    ),
    pytest.param(env("chat-room", "SendMessage", {"message": "hi"}), id="send-no-room"),
]

UNKNOWN_CHANNEL = [
    pytest.param(env(channel, "SubmitMessage", "x"), id=name)
    for name, channel in [
        ("empty", ""),
        ("capitalised", "Chat"),
        ("upper", "CHAT"),
        ("leading-space", " chat"),
        ("trailing-space", "chat "),
        ("chatroom", "chatroom"),
        ("chat_room", "chat_room"),
        ("broker-room-channel", "room:lobby"),
        ("broker-ping-channel", "ping1"),
        ("sessions", "sessions"),
        ("lone-surrogate", "\ud800"),
        ("nul", "\x00"),
        ("huge", "c" * 10_000),
    ]
]

UNKNOWN_TYPE = [
    pytest.param(env(channel, kind, contents), id=f"{channel}-{kind[:20] or 'empty'}")
    for channel, kind, contents in [
        ("chat", "submitMessage", "x"),
        ("chat", "NewMessageReceived", "x"),
        ("chat", "JoinRoom", {"room": "lobby"}),
        ("chat", "", "x"),
        ("chat-room", "SubmitMessage", "x"),
        ("chat-room", "joinRoom", {"room": "lobby"}),
        ("chat-room", "NewMessage", {"room": "lobby"}),
        ("chat-room", "MemberList", {"room": "lobby"}),
        ("chat-room", "Frobnicate", None),  # type is checked before contents
        ("chat-room", "", {"room": "lobby"}),
        ("session", "Welcome", None),
        ("session", "hello", None),
        ("session", "", None),
        ("session", "x" * 10_000, None),
        # Server-to-client channels are not accepted inbound, whatever the type.
        ("ping", "Ping", 1),
        ("ping", "Pong", 1),
        ("error", "Error", {"code": "invalid_json", "detail": "x"}),
        ("error", "SubmitMessage", "x"),
    ]
]

BAD_ROOMS = [
    pytest.param("", id="empty"),
    pytest.param("a" * 101, id="101-chars"),
    pytest.param("\u00e9" * 101, id="101-unicode-chars"),
    pytest.param("\x00", id="nul"),
    pytest.param("\x1f", id="x1f"),
    pytest.param("\x7f", id="del"),
    pytest.param("\x80", id="x80"),
    pytest.param("\x9f", id="x9f"),
    pytest.param("\n", id="newline"),
    pytest.param("\r", id="cr"),
    pytest.param("\t", id="tab"),
    pytest.param("lobby\n", id="trailing-newline"),
    pytest.param("\x00lobby", id="leading-nul"),
    pytest.param("lob\x1bby", id="escape"),
    pytest.param("\ud800", id="lone-high-surrogate"),
    pytest.param("\udfff", id="lone-low-surrogate"),
    pytest.param("lobby\udc80", id="trailing-surrogate"),
]

GOOD_ROOMS = [
    pytest.param("a", id="one-char"),
    pytest.param("a" * 100, id="100-chars"),
    pytest.param("\u00e9" * 100, id="100-unicode-chars"),
    pytest.param("\U0001f600" * 100, id="100-astral-chars"),
    pytest.param("lobby", id="plain"),
    pytest.param("room with spaces", id="spaces"),
    pytest.param(" ", id="single-space"),
    pytest.param("a:b:c", id="colons"),
    pytest.param("room:lobby", id="broker-prefix-lookalike"),
    pytest.param(":", id="colon"),
    pytest.param("\u00a0", id="nbsp-after-c1"),
    pytest.param("\u65e5\u672c\u8a9e", id="cjk"),
    pytest.param("caf\u00e9 \U0001f389", id="mixed"),
    pytest.param('quote"back\\slash', id="json-specials"),
]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        *[pytest.param(*p.values, "invalid_json", id=f"invalid_json-{p.id}") for p in INVALID_JSON],
        *[
            pytest.param(*p.values, "invalid_message", id=f"invalid_message-{p.id}")
            for p in INVALID_MESSAGE
        ],
        *[
            pytest.param(*p.values, "unknown_channel", id=f"unknown_channel-{p.id}")
            for p in UNKNOWN_CHANNEL
        ],
        *[pytest.param(*p.values, "unknown_type", id=f"unknown_type-{p.id}") for p in UNKNOWN_TYPE],
    ],
)
def test_decode_refuses_with_code(text: str, code: str) -> None:
    exc = refusal(text)
    assert exc.code == code
    assert type(exc).code == code
    assert exc.detail == str(exc)
    assert exc.detail


@pytest.mark.parametrize("kind", ROOM_KINDS)
@pytest.mark.parametrize("room", BAD_ROOMS)
def test_decode_refuses_bad_room(kind: str, room: str) -> None:
    assert refusal(room_env(kind, room)).code == "invalid_room"


@pytest.mark.parametrize("kind", ROOM_KINDS)
@pytest.mark.parametrize("room", BAD_ROOMS)
def test_decode_refuses_bad_room_spelled_raw(kind: str, room: str) -> None:
    """The same names sent as raw characters rather than JSON escapes."""
    contents: dict[str, object] = {"room": room, "message": "hi"}
    text = json.dumps(
        {"channel": "chat-room", "message": {"type": kind, "contents": contents}},
        ensure_ascii=False,
    )
    assert refusal(text).code == "invalid_room"


@pytest.mark.parametrize("kind", ROOM_KINDS)
@pytest.mark.parametrize("room", GOOD_ROOMS)
def test_decode_accepts_good_room(kind: str, room: str) -> None:
    assert decode(room_env(kind, room)) == expected_room_message(kind, room)


@pytest.mark.parametrize("room", [p.values[0] for p in GOOD_ROOMS])
def test_validate_room_returns_good_name(room: str) -> None:
    assert messages.validate_room(room) == room


@pytest.mark.parametrize(
    ("room", "code"),
    [
        *[(p.values[0], "invalid_room") for p in BAD_ROOMS],
        (None, "invalid_message"),
        (5, "invalid_message"),
        (["lobby"], "invalid_message"),
        (b"lobby", "invalid_message"),
    ],
)
def test_validate_room_refuses(room: object, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        messages.validate_room(room)
    assert info.value.code == code


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(env("c" * 10_000, "SubmitMessage", "x"), id="huge-channel"),
        pytest.param(env("chat", "t" * 10_000, "x"), id="huge-type"),
        pytest.param(env("chat-room", "t" * 10_000, None), id="huge-room-type"),
        pytest.param(env("\ud800" * 50, "SubmitMessage", "x"), id="surrogate-channel"),
        pytest.param(env("session", "\udfff", None), id="surrogate-type"),
        pytest.param(env("\U000e0001" * 100, "SubmitMessage", "x"), id="unprintable-channel"),
        pytest.param("[" * 100_000, id="deep"),
        pytest.param("1" * 10_000, id="long-int"),
    ],
)
def test_refusal_detail_is_short_and_sendable(text: str) -> None:
    """The detail goes back to the client: bounded, and encodable as UTF-8.

    Echoed names are cut to 50 characters, then ``repr``-escaped (up to 10
    characters each for ``\\U000XXXXX``), hence the bound.
    """
    exc = refusal(text)
    assert len(exc.detail) <= 600
    messages.error(exc.code, exc.detail).encode("utf-8")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("NaN", id="bare-NaN"),
        pytest.param("Infinity", id="bare-Infinity"),
        pytest.param("-Infinity", id="bare-minus-Infinity"),
        pytest.param(env("chat", "SubmitMessage", float("nan")), id="NaN-contents"),
        pytest.param(
            '{"channel":"session","message":{"type":"Hello","contents":NaN}}',
            id="NaN-in-accepted-Hello",
        ),
    ],
)
def test_decode_refuses_non_standard_json_constants(text: str) -> None:
    assert refusal(text).code == "invalid_json"


# split_frame ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "x", "a\nb", "\n\n", VALID_SUBMIT + "\n" + VALID_SUBMIT, " \t "],
)
def test_split_frame_unbatched_is_the_whole_frame(text: str) -> None:
    assert split_frame(text, batched=False) == [text]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a", ["a"]),
        ("a\nb", ["a", "b"]),
        ("a\nb\nc", ["a", "b", "c"]),
        ("a\n", ["a"]),
        ("\na", ["a"]),
        ("a\n\n\nb", ["a", "b"]),
        ("a\n  \n\t\nb", ["a", "b"]),
        (" a \nb", [" a ", "b"]),
        ("a\r\nb", ["a\r", "b"]),
        ("", []),
        ("\n", []),
        ("\n \r\n\t\n", []),
    ],
)
def test_split_frame_batched(text: str, parts: list[str]) -> None:
    assert split_frame(text, batched=True) == parts


def test_split_frame_batched_envelopes_decode_in_order() -> None:
    inbound: list[Inbound] = [
        SubmitMessage("first\nline"),
        JoinRoom("lobby"),
        SendMessage("lobby", "a\r\nb"),
        Hello(),
        LeaveRoom("lobby"),
    ]
    frames = [
        env("chat", "SubmitMessage", "first\nline"),
        env("chat-room", "JoinRoom", {"room": "lobby"}),
        env("chat-room", "SendMessage", {"room": "lobby", "message": "a\r\nb"}),
        env("session", "Hello"),
        env("chat-room", "LeaveRoom", {"room": "lobby"}),
    ]
    for separator in ("\n", "\r\n", "\n\n"):
        parts = split_frame(separator.join(frames), batched=True)
        assert [decode(part) for part in parts] == inbound


# Encoders -------------------------------------------------------------------------

POSTED_AT = "2024-02-29T23:59:59.123456Z"

ENCODED = [
    pytest.param(
        lambda: messages.new_message_received("hello", POSTED_AT).fill(7, "ep"),
        {
            "channel": "chat",
            "message": {
                "type": "NewMessageReceived",
                "contents": {"content": "hello", "postedAt": POSTED_AT, "offset": 7, "epoch": "ep"},
            },
        },
        id="new_message_received",
    ),
    pytest.param(
        lambda: messages.ping(1),
        {"channel": "ping", "message": {"type": "Ping", "contents": 1}},
        id="ping1",
    ),
    pytest.param(
        lambda: messages.ping(2),
        {"channel": "ping", "message": {"type": "Ping", "contents": 2}},
        id="ping2",
    ),
    pytest.param(
        lambda: messages.member_list("lobby", ["u1", "u2", "u3"], Position(3, "ep")),
        {
            "channel": "chat-room",
            "message": {
                "type": "MemberList",
                "contents": {
                    "room": "lobby",
                    "users": ["u1", "u2", "u3"],
                    "offset": 3,
                    "epoch": "ep",
                },
            },
        },
        id="member_list",
    ),
    pytest.param(
        lambda: messages.member_list("lobby", [], Position(0, "ep"), recovered=False),
        {
            "channel": "chat-room",
            "message": {
                "type": "MemberList",
                "contents": {
                    "room": "lobby",
                    "users": [],
                    "offset": 0,
                    "epoch": "ep",
                    "recovered": False,
                },
            },
        },
        id="member_list-empty",
    ),
    pytest.param(
        lambda: messages.joined_room("lobby", "u1"),
        {
            "channel": "chat-room",
            "message": {"type": "JoinedRoom", "contents": {"room": "lobby", "user": "u1"}},
        },
        id="joined_room",
    ),
    pytest.param(
        lambda: messages.left_room("lobby", "u1"),
        {
            "channel": "chat-room",
            "message": {"type": "LeftRoom", "contents": {"room": "lobby", "user": "u1"}},
        },
        id="left_room",
    ),
    pytest.param(
        lambda: messages.new_message("lobby", "u1", "hi").fill(12, "ep"),
        {
            "channel": "chat-room",
            "message": {
                "type": "NewMessage",
                "contents": {
                    "room": "lobby",
                    "user": "u1",
                    "message": "hi",
                    "offset": 12,
                    "epoch": "ep",
                },
            },
        },
        id="new_message",
    ),
    pytest.param(
        lambda: messages.welcome("u1", "server-a"),
        {
            "channel": "session",
            "message": {"type": "Welcome", "contents": {"user": "u1", "server": "server-a"}},
        },
        id="welcome",
    ),
    pytest.param(
        lambda: messages.error("not_joined", "not a member of room 'lobby'"),
        {
            "channel": "error",
            "message": {
                "type": "Error",
                "contents": {"code": "not_joined", "detail": "not a member of room 'lobby'"},
            },
        },
        id="error",
    ),
]


@pytest.mark.parametrize(("encode", "expected"), ENCODED)
def test_encoder_output(encode: Callable[[], str], expected: object) -> None:
    text = encode()
    assert json.loads(text) == expected
    # Compact: encoded once with no padding, so every recipient gets the same short str.
    assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("number", [1, 2])
def test_ping_is_exactly_the_documented_frame(number: int) -> None:
    expected = f'{{"channel":"ping","message":{{"type":"Ping","contents":{number}}}}}'
    assert messages.ping(number) == expected


def test_new_message_received_stamps_rfc3339_utc_now() -> None:
    before = datetime.now(UTC)
    text = messages.new_message_received("hello").fill(1, "e")
    contents = json.loads(text)["message"]["contents"]
    after = datetime.now(UTC)
    assert contents["content"] == "hello"
    posted_at = contents["postedAt"]
    assert RFC3339_UTC.match(posted_at), posted_at
    stamp = datetime.fromisoformat(posted_at.replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)


def test_now_rfc3339_format() -> None:
    for _ in range(50):  # every call, not only those whose microseconds are non-zero
        assert RFC3339_UTC.match(messages.now_rfc3339())


@pytest.mark.parametrize(
    "text",
    [
        "line\nline",
        "\n",
        "crlf\r\n",
        "\u2028\u2029",
        "nul\x00del\x7f",
        'quote"back\\slash',
        "caf\u00e9 \U0001f600",
        "</script>",
    ],
)
@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(
            lambda s: messages.new_message_received(s, POSTED_AT).fill(1, "e"),
            id="new_message_received",
        ),
        pytest.param(lambda s: messages.member_list(s, [s, s], Position(1, "e")), id="member_list"),
        pytest.param(lambda s: messages.joined_room(s, s), id="joined_room"),
        pytest.param(lambda s: messages.left_room(s, s), id="left_room"),
        pytest.param(lambda s: messages.new_message(s, s, s).fill(1, "e"), id="new_message"),
        pytest.param(lambda s: messages.welcome(s, s), id="welcome"),
        pytest.param(lambda s: messages.error(s, s), id="error"),
    ],
)
def test_encoder_output_has_no_raw_newline(encode: Callable[[str], str], text: str) -> None:
    """ndjson safety: ``\\n`` only ever separates envelopes in a batched frame."""
    encoded = encode(text)
    assert "\n" not in encoded
    assert text in leaves(json.loads(encoded))
    assert split_frame(encoded + "\n" + encoded, batched=True) == [encoded, encoded]


def test_encoder_keeps_non_ascii_unescaped() -> None:
    text = messages.new_message("r", "u", "caf\u00e9 \U0001f600").fill(1, "e")
    assert "caf\u00e9 \U0001f600" in text


@pytest.mark.parametrize(
    ("room", "channel"),
    [("lobby", "room:lobby"), ("a:b", "room:a:b"), ("caf\u00e9", "room:caf\u00e9")],
)
def test_room_channel(room: str, channel: str) -> None:
    assert messages.room_channel(room) == channel
