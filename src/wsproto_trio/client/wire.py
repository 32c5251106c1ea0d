"""The client's side of the wire format: frames to envelopes, envelopes to frames,
and the websocket URL with its recovery parameters (PROTOCOL.md sections 3 and 7).

Plain functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

NDJSON = "wsproto-trio.ndjson"
"""Subprotocol that lets one text frame carry several envelopes separated by ``\\n``."""

Envelope = dict[str, Any]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class BadFrame(ValueError):
    """A frame from the server that is not (newline-separated) JSON objects."""


def envelope(channel: str, type_: str, contents: Any = None) -> Envelope:
    """An envelope; ``contents`` is left out when it is None (as in ``Hello``)."""
    message: dict[str, Any] = {"type": type_}
    if contents is not None:
        message["contents"] = contents
    return {"channel": channel, "message": message}


def encode_frames(envelopes: Sequence[Envelope], batched: bool) -> list[str]:
    """Text frames for ``envelopes``: one frame when batching was accepted, else one each."""
    texts = [_encode(env) for env in envelopes]
    if batched and len(texts) > 1:
        return ["\n".join(texts)]
    return texts


def parse_frame(frame: str | bytes, batched: bool) -> list[Envelope]:
    """The envelopes of one frame (split on ``\\n`` only when batching was accepted)."""
    if isinstance(frame, bytes):
        raise BadFrame("the server sent a binary frame")
    pieces = frame.split("\n") if batched else [frame]
    found: list[Envelope] = []
    for piece in pieces:
        if not piece.strip():
            continue
        try:
            value = json.loads(piece)
        except ValueError as exc:
            raise BadFrame(f"not JSON: {piece[:100]!r}") from exc
        if not isinstance(value, dict):
            raise BadFrame(f"not a JSON object: {piece[:100]!r}")
        found.append(value)
    return found


def kind(env: Envelope) -> tuple[str, str]:
    """``(channel, type)`` as strings (``""`` where missing)."""
    message = env.get("message")
    type_ = message.get("type") if isinstance(message, dict) else None
    channel = env.get("channel")
    return (
        channel if isinstance(channel, str) else "",
        type_ if isinstance(type_, str) else "",
    )


def contents(env: Envelope) -> Any:
    message = env.get("message")
    return message.get("contents") if isinstance(message, dict) else None


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to (or replacing those of) its query string."""
    if not params:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def redact(url: str) -> str:
    """``url`` without the value of a ``token`` query parameter, for logs and events."""
    parts = urlsplit(url)
    if "token=" not in parts.query:
        return url
    query = [
        (k, "…" if k == "token" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="…")))
