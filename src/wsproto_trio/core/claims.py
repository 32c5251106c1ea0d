"""Claims: what a verified token lets its connection do (PROTOCOL.md section 8).

Rules:
- ``sub`` is a string of 1 to 200 characters (valid Unicode); ``rooms`` and
  ``send`` are lists of strings; ``chat`` is a boolean; ``info`` is a JSON
  object of at most 1024 bytes encoded. Anything else refuses the token;
- a room pattern is literal text in which ``*`` matches any run of characters,
  the empty one included; nothing else is special and case matters;
- ``rooms`` absent: every room may be joined; ``[]``: none. ``send`` absent:
  the same as ``rooms``. ``chat`` absent: ``true``;
- an anonymous connection (``AUTH_ANONYMOUS``) may join, send and submit nothing;
- a refresh must name the same subject (never from anonymous); it leaves the
  joined rooms the new claims no longer allow to join;
- ``Expiring`` goes out ``notice`` seconds before ``exp`` (at once when less is
  left); the connection closes at ``exp`` itself, without leeway.

Plain synchronous code: the verifier (``wsproto_trio.auth``) checks signatures
and times, then hands the payload to ``from_payload``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import InvalidToken, TokenRejected

MAX_SUB_LENGTH = 200
MAX_INFO_BYTES = 1024

_SURROGATE = re.compile("[\ud800-\udfff]")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Pattern:
    """One room pattern, split once at its stars.

    Matching is a left-to-right search for each piece between stars, so it is
    linear in the room name and pattern: no regex, no backtracking blow-up
    however many stars a token carries.
    """

    __slots__ = ("_exact", "_middle", "_prefix", "_suffix", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        pieces = text.split("*")
        self._exact = len(pieces) == 1
        self._prefix = pieces[0]
        self._suffix = pieces[-1] if len(pieces) > 1 else ""
        self._middle = tuple(p for p in pieces[1:-1] if p)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"

    def matches(self, name: str) -> bool:
        if self._exact:
            return name == self.text
        prefix, suffix = self._prefix, self._suffix
        end = len(name) - len(suffix)
        if end < len(prefix) or not name.startswith(prefix) or not name.endswith(suffix):
            return False
        position = len(prefix)
        for piece in self._middle:
            found = name.find(piece, position, end)
            if found < 0:
                return False
            position = found + len(piece)
        return True


class Patterns:
    """A list of room patterns; a room is allowed when any of them matches."""

    __slots__ = ("_exact", "_wild", "texts")

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = tuple(texts)
        self._exact = frozenset(t for t in self.texts if "*" not in t)
        self._wild = tuple(Pattern(t) for t in dict.fromkeys(self.texts) if "*" in t)

    def __repr__(self) -> str:
        return f"Patterns({list(self.texts)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Patterns) and self.texts == other.texts

    def __hash__(self) -> int:
        return hash(self.texts)

    def matches(self, name: str) -> bool:
        return name in self._exact or any(p.matches(name) for p in self._wild)


@dataclass(frozen=True, slots=True)
class Claims:
    """One connection's identity and permissions.

    ``sub`` is ``None`` for an anonymous connection. ``rooms``/``send`` are
    ``None`` when the token has no such claim (every room; the same as
    ``rooms``). ``info_json`` is ``info`` encoded once, for the envelopes.
    """

    sub: str | None
    exp: float | None = None
    rooms: Patterns | None = None
    send: Patterns | None = None
    chat: bool = True
    info: Mapping[str, object] | None = None

    @classmethod
    def anonymous(cls) -> Claims:
        return cls(sub=None, rooms=Patterns(()), send=Patterns(()), chat=False)

    @property
    def is_anonymous(self) -> bool:
        return self.sub is None

    def may_join(self, room: str) -> bool:
        return self.rooms is None or self.rooms.matches(room)

    def may_send(self, room: str) -> bool:
        patterns = self.send if self.send is not None else self.rooms
        return patterns is None or patterns.matches(room)

    def may_chat(self) -> bool:
        return self.chat

    def subject(self) -> dict[str, object]:
        """The fields ``LeftRoom``, ``NewMessage`` and ``NewMessageReceived`` add."""
        return {"sub": self.sub}

    def profile(self) -> dict[str, object]:
        """The fields ``JoinedRoom`` and a ``MemberList`` member add: ``sub`` and ``info``."""
        if self.info is None:
            return {"sub": self.sub}
        return {"sub": self.sub, "info": self.info}


def from_payload(payload: Mapping[str, object]) -> Claims:
    """Claims from a verified token's payload; ``TokenRejected`` names a bad claim.

    ``exp``, ``nbf``, ``iat``, ``aud`` and ``iss`` were checked by the verifier
    already; this checks the subject and the shape of our own claims.
    """
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH:
        reason = f"no valid sub: it must be a string of 1 to {MAX_SUB_LENGTH} characters"
        raise TokenRejected(reason)
    if _SURROGATE.search(sub):
        raise TokenRejected("no valid sub: it is not valid Unicode (lone surrogate)")
    exp = payload.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
        raise TokenRejected("claims of the wrong shape: 'exp' must be a number")
    return Claims(
        sub=sub,
        exp=exp,
        rooms=_patterns(payload, "rooms"),
        send=_patterns(payload, "send"),
        chat=_chat(payload),
        info=_info(payload),
    )


def _patterns(payload: Mapping[str, object], name: str) -> Patterns | None:
    if name not in payload:
        return None
    value = payload[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenRejected(f"claims of the wrong shape: {name!r} must be a list of strings")
    return Patterns(value)


def _chat(payload: Mapping[str, object]) -> bool:
    value = payload.get("chat", True)
    if not isinstance(value, bool):
        raise TokenRejected("claims of the wrong shape: 'chat' must be true or false")
    return value


def _info(payload: Mapping[str, object]) -> Mapping[str, object] | None:
    if "info" not in payload:
        return None
    value = payload["info"]
    if not isinstance(value, dict):
        raise TokenRejected("claims of the wrong shape: 'info' must be a JSON object")
    try:
        size = len(_encode(value).encode("utf-8"))
    except UnicodeEncodeError:
        raise TokenRejected("claims of the wrong shape: 'info' is not valid Unicode") from None
    if size > MAX_INFO_BYTES:
        raise TokenRejected(
            f"claims of the wrong shape: 'info' is {size} bytes encoded, more than {MAX_INFO_BYTES}"
        )
    return value


def refresh(current: Claims, new: Claims, joined: Iterable[str]) -> list[str]:
    """The joined rooms to leave when ``new`` replaces ``current``, in name order.

    ``InvalidToken`` (nothing changes) when the subjects differ or the
    connection is anonymous: a refresh extends a session, it never switches user.
    """
    if current.is_anonymous:
        raise InvalidToken("an anonymous connection cannot be refreshed")
    if new.sub != current.sub:
        raise InvalidToken("the token names another subject")
    return sorted(room for room in joined if not new.may_join(room))


class Deadlines(NamedTuple):
    """Seconds from now until the ``Expiring`` notice and until the 4001 close."""

    notice: float
    close: float


def deadlines(exp: float | None, now: float, notice: float) -> Deadlines | None:
    """When to warn and when to close, for a token expiring at ``exp`` (wall clock).

    ``None`` when the token has no ``exp``. The notice is due ``notice`` seconds
    before ``exp``, at once when less is left; the close at ``exp`` itself.
    """
    if exp is None:
        return None
    left = max(0.0, exp - now)
    return Deadlines(notice=max(0.0, left - notice), close=left)
