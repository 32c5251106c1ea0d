"""The Python ceiling: the smallest fast WebSocket fan-out Python offers, to compare ours against.

A ``websockets`` asyncio server with ``redis.asyncio`` pub/sub speaking the subset of
PROTOCOL.md the bench uses (``chat``, ``chat-room`` join/send/leave, ``/ping1``/``/ping2``).
Every envelope is JSON-encoded once by the publishing server; subscribers forward the Redis
payload verbatim with ``websockets.broadcast`` (no per-recipient work beyond the frame write).
It keeps no presence: ``MemberList`` lists the joiner only. Not part of the package.

    python bench/ceiling_websockets.py --port 9401 --redis redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

CLIENTS: set[ServerConnection] = set()
ROOMS: dict[str, set[ServerConnection]] = {}


def envelope(channel: str, kind: str, contents: Any) -> str:
    """Encode one envelope; compact separators, like a careful server would send."""
    return json.dumps(
        {"channel": channel, "message": {"type": kind, "contents": contents}},
        separators=(",", ":"),
    )


def now() -> str:
    """RFC 3339 UTC with a Z suffix and microseconds, as PROTOCOL.md 4 asks for postedAt."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def main(port: int, redis_url: str) -> None:
    """Serve until killed; the pump task forwards every Redis message to local sockets."""
    r = aioredis.from_url(redis_url)
    pubsub = r.pubsub()
    await pubsub.subscribe("chat", "ping1", "ping2")

    async def pump() -> None:
        async for m in pubsub.listen():
            if m["type"] != "message":
                continue
            ch: bytes = m["channel"]
            targets = CLIENTS if not ch.startswith(b"room:") else ROOMS.get(ch[5:].decode(), ())
            broadcast(targets, m["data"], text=True)

    async def leave(ws: ServerConnection, room: str) -> None:
        members = ROOMS.get(room, set())
        members.discard(ws)
        if not members:
            ROOMS.pop(room, None)
            await pubsub.unsubscribe(f"room:{room}")

    async def handler(ws: ServerConnection) -> None:
        user, joined = str(uuid.uuid4()), set[str]()
        CLIENTS.add(ws)
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)["message"]
                    kind, c = msg["type"], msg["contents"]
                    room = c["room"] if isinstance(c, dict) else ""
                except (ValueError, KeyError, TypeError):
                    continue
                if kind == "SubmitMessage":
                    body = {"content": c, "postedAt": now()}
                    await r.publish("chat", envelope("chat", "NewMessageReceived", body))
                elif kind == "JoinRoom" and room not in joined:
                    if not ROOMS.setdefault(room, set()):
                        await pubsub.subscribe(f"room:{room}")
                    ROOMS[room].add(ws)
                    joined.add(room)
                    await ws.send(
                        envelope("chat-room", "MemberList", {"room": room, "users": [user]})
                    )
                    body = {"room": room, "user": user}
                    await r.publish(f"room:{room}", envelope("chat-room", "JoinedRoom", body))
                elif kind == "SendMessage" and room in joined:
                    body = {"room": room, "user": user, "message": c.get("message", "")}
                    await r.publish(f"room:{room}", envelope("chat-room", "NewMessage", body))
                elif kind == "LeaveRoom" and room in joined:
                    joined.discard(room)
                    await leave(ws, room)
        finally:
            CLIENTS.discard(ws)
            for room in joined:
                await leave(ws, room)

    async def process_request(conn: ServerConnection, request: Request) -> Response | None:
        if request.path in ("/ping1", "/ping2"):
            n = int(request.path[-1])
            await r.publish(f"ping{n}", envelope("ping", "Ping", n))
            return conn.respond(HTTPStatus.OK, "pong\n")
        if request.path in ("/readyz", "/healthz"):
            return conn.respond(HTTPStatus.OK, "ok\n")
        return None if request.path == "/websockets" else conn.respond(HTTPStatus.NOT_FOUND, "")

    async with serve(
        handler, "127.0.0.1", port, process_request=process_request, compression=None, backlog=1024
    ):
        await pump()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9401)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.redis))
