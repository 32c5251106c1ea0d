"""messages: properties over generated input.

The contract (PROTOCOL.md 5, messages.py docstring): ``decode`` either returns
one of the inbound dataclasses or raises exactly one ``ProtocolError`` carrying
a decode code; no input raises anything else. Encoders never emit a raw
newline, so batched (ndjson) frames split back into the envelopes they joined.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

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
from wsproto_trio.errors import ProtocolError

# No example database: it would be written outside tests/unit, and failures
# print their reproducing example anyway. No deadline: the deep-nesting inputs
# are slow on a loaded CI machine without being wrong.
PROPERTY = settings(max_examples=300, deadline=None, database=None)

INBOUND_TYPES = (SubmitMessage, JoinRoom, LeaveRoom, SendMessage, Hello)
DECODE_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_channel",
    "unknown_type",
    "invalid_room",
}
KNOWN: dict[tuple[str, str], type[Inbound]] = {
    ("chat", "SubmitMessage"): SubmitMessage,
    ("chat-room", "JoinRoom"): JoinRoom,
    ("chat-room", "LeaveRoom"): LeaveRoom,
    ("chat-room", "SendMessage"): SendMessage,
    ("session", "Hello"): Hello,
}
CHANNELS = ["chat", "chat-room", "session", "ping", "error"]
TYPES = ["SubmitMessage", "JoinRoom", "LeaveRoom", "SendMessage", "Hello", "Ping", "Error"]

# Any code point, lone surrogates included (hypothesis leaves them out by default).
any_char = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
any_text = st.text(any_char)
tricky_text = st.one_of(
    any_text,
    st.sampled_from(["", " ", "lobby", "a" * 100, "a" * 101, "\x00", "\x7f", "\n", "\ud800"]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN (refused elsewhere)
    any_text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(any_text, children, max_size=5),
    ),
    max_leaves=20,
)
contents_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"room": st.one_of(tricky_text, json_scalars)},
        optional={"message": st.one_of(tricky_text, json_scalars)},
    ),
)
envelopes = st.fixed_dictionaries(
    {
        "channel": st.one_of(st.sampled_from(CHANNELS), any_text, json_scalars),
        "message": st.fixed_dictionaries(
            {"type": st.one_of(st.sampled_from(TYPES), any_text, json_scalars)},
            optional={"contents": contents_values},
        ),
    }
)
room_names = st.text(
    st.characters(exclude_categories=["Cc", "Cs"]),
    min_size=1,
    max_size=messages.MAX_ROOM_LENGTH,
)
message_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1)


def check_decode(text: str) -> Inbound | ProtocolError:
    """Decode; anything but an inbound message or a ProtocolError fails the test."""
    try:
        result = decode(text)
    except ProtocolError as exc:
        assert exc.code in DECODE_CODES
        messages.error(exc.code, exc.detail).encode("utf-8")  # sendable back
        return exc
    assert isinstance(result, INBOUND_TYPES)
    return result


def dumps(value: object, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@PROPERTY
@given(any_text)
def test_decode_any_text(text: str) -> None:
    check_decode(text)


@PROPERTY
@given(st.binary(), st.sampled_from(["surrogateescape", "replace"]))
def test_decode_any_bytes(data: bytes, errors: str) -> None:
    check_decode(data.decode("utf-8", errors=errors))


@PROPERTY
@given(json_values, st.booleans())
def test_decode_any_json_value(value: object, ascii_only: bool) -> None:
    check_decode(dumps(value, ascii_only))


@PROPERTY
@given(json_values, st.integers(min_value=0, max_value=200))
def test_decode_truncated_json(value: object, cut: int) -> None:
    text = dumps({"channel": "chat", "message": {"type": "SubmitMessage", "contents": value}}, True)
    check_decode(text[: max(0, len(text) - cut)])


@PROPERTY
@given(envelopes, st.booleans())
def test_decode_envelope_shapes(envelope: dict[str, Any], ascii_only: bool) -> None:
    channel = envelope["channel"]
    kind = envelope["message"]["type"]
    outcome = check_decode(dumps(envelope, ascii_only))
    if not isinstance(channel, str) or not isinstance(kind, str):
        assert isinstance(outcome, ProtocolError)
        assert outcome.code == "invalid_message"
    elif (channel, kind) not in KNOWN:
        assert isinstance(outcome, ProtocolError)
        known_channel = channel in CHANNELS
        assert outcome.code == ("unknown_type" if known_channel else "unknown_channel")
    elif isinstance(outcome, ProtocolError):
        assert outcome.code in {"invalid_message", "invalid_room"}
    else:
        assert type(outcome) is KNOWN[(channel, kind)]
        contents = envelope["message"].get("contents")
        match outcome:
            case SubmitMessage(content):
                assert content == contents
            case JoinRoom(room) | LeaveRoom(room):
                assert room == contents["room"]
            case SendMessage(room, text):
                assert (room, text) == (contents["room"], contents["message"])
            case Hello():
                pass


@PROPERTY
@given(st.sampled_from(sorted(KNOWN)), contents_values, st.booleans())
def test_decode_known_kinds_any_contents(
    key: tuple[str, str], contents: object, ascii_only: bool
) -> None:
    """Every known message kind with arbitrary contents: its dataclass or a shape error."""
    channel, kind = key
    outcome = check_decode(
        dumps({"channel": channel, "message": {"type": kind, "contents": contents}}, ascii_only)
    )
    if isinstance(outcome, ProtocolError):
        assert outcome.code in {"invalid_message", "invalid_room"}
    else:
        assert type(outcome) is KNOWN[key]


@PROPERTY
@given(message_text, st.booleans())
def test_submit_message_round_trips(content: str, ascii_only: bool) -> None:
    text = dumps(
        {"channel": "chat", "message": {"type": "SubmitMessage", "contents": content}}, ascii_only
    )
    assert decode(text) == SubmitMessage(content)


@PROPERTY
@given(room_names, message_text, st.booleans())
def test_room_messages_round_trip(room: str, text: str, ascii_only: bool) -> None:
    def frame(kind: str, contents: dict[str, str]) -> str:
        return dumps(
            {"channel": "chat-room", "message": {"type": kind, "contents": contents}}, ascii_only
        )

    assert decode(frame("JoinRoom", {"room": room})) == JoinRoom(room)
    assert decode(frame("LeaveRoom", {"room": room})) == LeaveRoom(room)
    assert decode(frame("SendMessage", {"room": room, "message": text})) == SendMessage(room, text)


@PROPERTY
@given(room_names, st.characters(categories=["Cc", "Cs"]), st.integers(min_value=0, max_value=100))
def test_room_with_control_or_surrogate_is_invalid(room: str, bad: str, at: int) -> None:
    name = room[:at] + bad + room[at:]
    frame = dumps(
        {"channel": "chat-room", "message": {"type": "JoinRoom", "contents": {"room": name}}}, True
    )
    outcome = check_decode(frame)
    assert isinstance(outcome, ProtocolError)
    assert outcome.code == "invalid_room"


@PROPERTY
@given(st.lists(st.tuples(room_names, st.text(), st.text()), min_size=1, max_size=10))
def test_encoded_envelopes_split_back_from_batched_frame(items: list[tuple[str, str, str]]) -> None:
    encoded = [
        messages.new_message(room, user, text).fill(i, "e")
        for i, (room, user, text) in enumerate(items)
    ]
    encoded += [
        messages.new_message_received(text, "2024-01-01T00:00:00.000000Z").fill(1, "e")
        for _, _, text in items
    ]
    assert all("\n" not in envelope for envelope in encoded)
    assert split_frame("\n".join(encoded), batched=True) == encoded
    for i, (envelope, (room, user, text)) in enumerate(zip(encoded, items, strict=False)):
        assert json.loads(envelope)["message"]["contents"] == {
            "room": room,
            "user": user,
            "message": text,
            "offset": i,
            "epoch": "e",
        }
