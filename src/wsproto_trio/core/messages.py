"""Wire format: decoding inbound frames and encoding outbound envelopes.

Rules (PROTOCOL.md sections 3 to 5):
- a frame is UTF-8 text holding one JSON object ``{"channel", "message": {"type",
  "contents"}}``; with the ndjson subprotocol, several separated by ``\\n``;
- anything else is refused with exactly one ``ProtocolError`` whose code says why;
  no input raises anything else (property-tested);
- strings must be encodable as UTF-8: JSON may spell lone surrogates (``"\\ud800"``)
  that would later break the socket or Redis, so they are refused here;
- outbound envelopes are encoded once, compactly, and the same ``str`` is shared by
  every recipient.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import (
    InvalidJson,
    InvalidMessage,
    InvalidRoom,
    UnknownChannel,
    UnknownType,
)

MAX_ROOM_LENGTH = 100
NDJSON_SUBPROTOCOL = "wsproto-trio.ndjson"

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# NaN and Infinity are Python extensions, not JSON: refused like any bad token.
_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# Inbound messages -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitMessage:
    content: str


@dataclass(frozen=True, slots=True)
class JoinRoom:
    room: str


@dataclass(frozen=True, slots=True)
class LeaveRoom:
    room: str


@dataclass(frozen=True, slots=True)
class SendMessage:
    room: str
    message: str


@dataclass(frozen=True, slots=True)
class Hello:
    """Our extension: the client asks for its own user id and the server's id."""


Inbound = SubmitMessage | JoinRoom | LeaveRoom | SendMessage | Hello


def split_frame(text: str, batched: bool) -> list[str]:
    """The envelopes of one frame: one, or several ``\\n``-separated when batched."""
    if not batched:
        return [text]
    return [part for part in text.split("\n") if part.strip()]


def decode(text: str) -> Inbound:
    """Parse one envelope, raising the ``ProtocolError`` that names what is wrong."""
    try:
        data = _decode(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and ints beyond Python's digit limit;
        # RecursionError is what thousands of nested brackets raise.
        raise InvalidJson(f"frame is not valid JSON: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("expected a JSON object with 'channel' and 'message'")
    channel = data.get("channel")
    message = data.get("message")
    if not isinstance(channel, str):
        raise InvalidMessage("'channel' must be a string")
    if not isinstance(message, dict):
        raise InvalidMessage("'message' must be an object with 'type' and 'contents'")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("'message.type' must be a string")
    contents = message.get("contents")
    match channel:
        case "chat":
            if kind != "SubmitMessage":
                raise UnknownType(f"unknown type {_quote(kind)} on channel 'chat'")
            return SubmitMessage(require_text(contents, "contents"))
        case "chat-room":
            return _decode_room_message(kind, contents)
        case "session":
            if kind != "Hello":
                raise UnknownType(f"unknown type {_quote(kind)} on channel 'session'")
            return Hello()
        case "ping" | "error":
            raise UnknownType(f"channel {channel!r} is server-to-client only")
        case _:
            raise UnknownChannel(f"unknown channel {_quote(channel)}")


def _decode_room_message(kind: str, contents: Any) -> Inbound:
    if kind not in ("JoinRoom", "LeaveRoom", "SendMessage"):
        raise UnknownType(f"unknown type {_quote(kind)} on channel 'chat-room'")
    if not isinstance(contents, dict):
        raise InvalidMessage(f"{kind} contents must be an object with 'room'")
    room = validate_room(contents.get("room"))
    if kind == "JoinRoom":
        return JoinRoom(room)
    if kind == "LeaveRoom":
        return LeaveRoom(room)
    return SendMessage(room, require_text(contents.get("message"), "contents.message"))


def validate_room(room: object) -> str:
    """A room name: 1 to 100 characters, no control characters."""
    if not isinstance(room, str):
        raise InvalidMessage("'room' must be a string")
    if not 1 <= len(room) <= MAX_ROOM_LENGTH:
        raise InvalidRoom(f"room name must be 1 to {MAX_ROOM_LENGTH} characters")
    if _CONTROL.search(room) or _SURROGATE.search(room):
        raise InvalidRoom("room name must not contain control characters")
    return room


def require_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidMessage(f"{where} must be a string")
    if not value:
        raise InvalidMessage(f"{where} must not be empty")
    if _SURROGATE.search(value):
        raise InvalidMessage(f"{where} is not valid Unicode (lone surrogate)")
    return value


def _quote(value: str) -> str:
    return repr(value[:50] + "..." if len(value) > 50 else value)


def _short(exc: BaseException) -> str:
    return str(exc)[:120] or type(exc).__name__


# Outbound envelopes -----------------------------------------------------------


def envelope(channel: str, kind: str, contents: object) -> str:
    """Encode one envelope; the result is sent as-is to every recipient."""
    return _encode({"channel": channel, "message": {"type": kind, "contents": contents}})


def now_rfc3339() -> str:
    """UTC with a ``Z`` suffix and microseconds, as ``postedAt`` requires."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_message_received(content: str, posted_at: str | None = None) -> str:
    return envelope(
        "chat",
        "NewMessageReceived",
        {"content": content, "postedAt": posted_at or now_rfc3339()},
    )


def ping(number: int) -> str:
    return envelope("ping", "Ping", number)


def member_list(room: str, users: list[str]) -> str:
    return envelope("chat-room", "MemberList", {"room": room, "users": users})


def joined_room(room: str, user: str) -> str:
    return envelope("chat-room", "JoinedRoom", {"room": room, "user": user})


def left_room(room: str, user: str) -> str:
    return envelope("chat-room", "LeftRoom", {"room": room, "user": user})


def new_message(room: str, user: str, message: str) -> str:
    return envelope("chat-room", "NewMessage", {"room": room, "user": user, "message": message})


def welcome(user: str, server: str) -> str:
    return envelope("session", "Welcome", {"user": user, "server": server})


def error(code: str, detail: str) -> str:
    return envelope("error", "Error", {"code": code, "detail": detail})


# Broker channel names ---------------------------------------------------------

CHAT_CHANNEL = "chat"
PING_CHANNELS = {"ping1": 1, "ping2": 2}
ROOM_PREFIX = "room:"


def room_channel(room: str) -> str:
    return ROOM_PREFIX + room
