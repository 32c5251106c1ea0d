"""One readable line per event, for command-line tools (examples/, the chaos log)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import assert_never

from .events import (
    ChatMessage,
    Connected,
    Disconnected,
    Error,
    Event,
    Expiring,
    Joined,
    Left,
    Lost,
    MemberList,
    Other,
    Ping,
    Reconnected,
    RoomMessage,
)


def _clock(timestamp: str) -> str:
    try:
        return datetime.fromisoformat(timestamp).strftime("%H:%M:%S")
    except ValueError:
        return timestamp


def _who(user: str, sub: str | None) -> str:
    return f"{sub} ({user[:8]})" if sub else user


def _stream(room: str | None) -> str:
    return "chat" if room is None else f"room {room}"


def format_event(event: Event) -> str:
    """E.g. ``[chat 12:00:01] hello``, ``[room lobby] <id> hi``, ``[reconnected] ...``."""
    match event:
        case ChatMessage():
            mark = " (replayed)" if event.replayed else ""
            return f"[chat {_clock(event.posted_at)}] {event.content}{mark}"
        case RoomMessage():
            mark = " (replayed)" if event.replayed else ""
            return f"[room {event.room}] <{_who(event.user, event.sub)}> {event.message}{mark}"
        case MemberList():
            names = ", ".join(sorted(_who(m.user, m.sub) for m in event.members))
            recovered = "" if event.recovered is None else f" (recovered: {event.recovered})"
            return f"[room {event.room}] members: {names}{recovered}"
        case Joined():
            return f"[room {event.room}] {_who(event.user, event.sub)} joined"
        case Left():
            return f"[room {event.room}] {_who(event.user, event.sub)} left"
        case Ping():
            return f"[ping] {event.number}"
        case Error():
            where = f" (joining {event.room})" if event.room else ""
            return f"[error {event.code}] {event.detail}{where}"
        case Lost():
            return (
                f"[lost] {_stream(event.room)}: messages up to {event.offset} of epoch "
                f"{event.epoch} may be missing"
            )
        case Connected():
            again = "re" if event.reconnect else ""
            return f"[session] {again}connected as {event.user} to server {event.server}"
        case Disconnected():
            return f"[session] disconnected ({event.code or 'no close code'}: {event.reason})"
        case Reconnected():
            parts = []
            for stream in event.streams:
                if stream.error:
                    state = f"not rejoined ({stream.error})"
                elif stream.recovered:
                    state = f"{stream.replayed} recovered"
                elif stream.recovered is None:
                    state = "rejoined"
                else:
                    state = "messages may be missing"
                parts.append(f"{_stream(stream.room)}: {state}")
            return f"[reconnected after {event.down_for:.1f} s] " + "; ".join(parts)
        case Expiring():
            return f"[session] token expires at {event.exp:.0f}"
        case Other():
            return f"[{event.channel} {event.type}] {json.dumps(event.contents)}"
        case _:
            assert_never(event)
