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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from ..errors import (
    InvalidJson,
    InvalidMessage,
    InvalidRoom,
    UnknownChannel,
    UnknownType,
)
from .positions import EPOCH_PATTERN, Position

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
    since: Position | None = None  # recover what was missed after this position
    history: int | None = None  # or (as the fallback) the latest K kept messages


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


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new token for this connection (PROTOCOL.md section 8); never in a repr or log."""

    token: str = field(repr=False)


Inbound = SubmitMessage | JoinRoom | LeaveRoom | SendMessage | Hello | Refresh


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
            if kind == "Refresh":
                if not isinstance(contents, dict):
                    raise InvalidMessage("Refresh contents must be an object with 'token'")
                return Refresh(require_text(contents.get("token"), "contents.token"))
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
        return JoinRoom(room, _since(contents.get("since")), _history(contents.get("history")))
    if kind == "LeaveRoom":
        return LeaveRoom(room)
    return SendMessage(room, require_text(contents.get("message"), "contents.message"))


def _since(value: object) -> Position | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidMessage("'since' must be an object with 'offset' and 'epoch'")
    return position(value.get("offset"), value.get("epoch"), "since")


def position(offset: object, epoch: object, where: str) -> Position:
    """A client's stream position: an offset >= 0 and a well-formed epoch."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidMessage(f"{where}.offset must be an integer >= 0")
    if offset > 2**53:
        raise InvalidMessage(f"{where}.offset is out of range")
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise InvalidMessage(f"{where}.epoch must be 1 to 32 characters of [A-Za-z0-9_-]")
    return Position(offset, epoch)


@dataclass(frozen=True, slots=True)
class ChatRecovery:
    """What the websocket URL asks for the chat (PROTOCOL.md section 7)."""

    since: Position | None
    history: int | None


def chat_recovery(query: str) -> ChatRecovery | None:
    """``chat_epoch``/``chat_offset`` (together) and ``chat_history`` from a URL's
    query string; None when none is given. ``InvalidMessage`` says what is wrong."""
    params = parse_qs(query, keep_blank_values=True)
    epoch = params.get("chat_epoch")
    offset = params.get("chat_offset")
    history = params.get("chat_history")
    if epoch is None and offset is None and history is None:
        return None
    for name, values in (("chat_epoch", epoch), ("chat_offset", offset), ("chat_history", history)):
        if values is not None and len(values) > 1:
            raise InvalidMessage(f"{name} given more than once")
    since = None
    if (epoch is None) != (offset is None):
        raise InvalidMessage("chat_epoch and chat_offset go together")
    if epoch is not None and offset is not None:
        if not offset[0].isdigit() or not offset[0].isascii() or len(offset[0]) > 16:
            raise InvalidMessage("chat_offset must be an integer >= 0")
        since = position(int(offset[0]), epoch[0], "chat")
    count = None
    if history is not None:
        text = history[0]
        if not text.isdigit() or not text.isascii() or len(text) > 10:
            raise InvalidMessage("chat_history must be an integer >= 1")
        count = history_count(int(text), "chat_history")
    return ChatRecovery(since, count)


def _history(value: object) -> int | None:
    if value is None:
        return None
    return history_count(value, "history")


def history_count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidMessage(f"{where} must be an integer >= 1")
    return min(value, 2**31)


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


@dataclass(frozen=True, slots=True)
class Template:
    """A positioned envelope before the broker gives it a position.

    The envelope's contents end with ``"offset"`` and ``"epoch"``; ``head`` is
    everything before the offset's digits. The broker (Python or a Redis script)
    only concatenates ``head, offset, ',"epoch":"', epoch, '"', tail``: one
    encoder, and the same text in history, on pub/sub and to every client.
    """

    head: str
    tail: str = "}}}"

    def fill(self, offset: int, epoch: str) -> str:
        return f'{self.head}{offset},"epoch":"{epoch}"{self.tail}'


def positioned(channel: str, kind: str, contents: dict[str, object]) -> Template:
    text = envelope(channel, kind, contents)
    if not contents or not text.endswith("}}}"):
        raise ValueError("a positioned envelope needs non-empty object contents")
    return Template(text[:-3] + ',"offset":')


Identity = dict[str, object]
"""Fields that authentication adds to identity-bearing envelopes (``sub``,
``info``); empty with authentication off, so that none of them appear."""

NO_IDENTITY: Identity = {}


def new_message_received(
    content: str, posted_at: str | None = None, identity: Identity = NO_IDENTITY
) -> Template:
    contents: dict[str, object] = {"content": content, "postedAt": posted_at or now_rfc3339()}
    contents.update(identity)
    return positioned("chat", "NewMessageReceived", contents)


def ping(number: int) -> str:
    return envelope("ping", "Ping", number)


def member_list(
    room: str,
    users: list[str],
    at: Position,
    *,
    recovered: bool | None = None,
    members: list[object] | None = None,
) -> str:
    """``members``: one record per user (authentication on), else absent."""
    contents: dict[str, object] = {
        "room": room,
        "users": users,
        "offset": at.offset,
        "epoch": at.epoch,
    }
    if recovered is not None:
        contents["recovered"] = recovered
    if members is not None:
        contents["members"] = members
    return envelope("chat-room", "MemberList", contents)


def joined_room(room: str, user: str, identity: Identity = NO_IDENTITY) -> str:
    return envelope("chat-room", "JoinedRoom", {"room": room, "user": user, **identity})


def left_room(room: str, user: str, identity: Identity = NO_IDENTITY) -> str:
    return envelope("chat-room", "LeftRoom", {"room": room, "user": user, **identity})


def new_message(room: str, user: str, message: str, identity: Identity = NO_IDENTITY) -> Template:
    contents: dict[str, object] = {"room": room, "user": user, "message": message}
    contents.update(identity)
    return positioned("chat-room", "NewMessage", contents)


def chat_position(at: Position, recovered: bool | None) -> str:
    contents: dict[str, object] = {"offset": at.offset, "epoch": at.epoch}
    if recovered is not None:
        contents["recovered"] = recovered
    return envelope("chat", "Position", contents)


def lost(room: str | None, epoch: str, offset: int) -> str:
    """Messages before ``offset + 1`` of ``epoch`` may be missing (a room's, or the chat's)."""
    if room is None:
        return envelope("chat", "Lost", {"epoch": epoch, "offset": offset})
    return envelope("chat-room", "Lost", {"room": room, "epoch": epoch, "offset": offset})


def welcome(user: str, server: str, identity: Identity = NO_IDENTITY) -> str:
    """``identity``: ``sub`` and ``exp`` with authentication on."""
    return envelope("session", "Welcome", {"user": user, "server": server, **identity})


def expiring(exp: float) -> str:
    return envelope("session", "Expiring", {"exp": exp})


def member_record(user: str, identity: Identity) -> str:
    """A member's entry in ``MemberList.members``, as presence stores it (encoded)."""
    return _encode({"user": user, **identity})


def error(code: str, detail: str) -> str:
    return envelope("error", "Error", {"code": code, "detail": detail})


# Broker channel names ---------------------------------------------------------

CHAT_CHANNEL = "chat"
PING_CHANNELS = {"ping1": 1, "ping2": 2}
ROOM_PREFIX = "room:"


def room_channel(room: str) -> str:
    return ROOM_PREFIX + room


def room_name(channel: str) -> str | None:
    """The room of a room channel; None for the chat and pings."""
    return channel[len(ROOM_PREFIX) :] if channel.startswith(ROOM_PREFIX) else None
