"""The HTTP routes of PROTOCOL.md section 2: operations (``ops``) and the admin API (``admin``).

Handlers reach their server through ``server()`` (the app serving the request),
never through closures, so a route is one decorated function. Every admin route
sits on the ``admin`` blueprint, whose ``before_request`` checks the bearer
token; a broker that cannot answer (``BrokerUnavailable``, ``Unavailable``) is
turned into a 503 JSON body by the app's one error handler (``app.py``), so a
new admin route is just::

    @admin.get("/api/rooms/<room:room>/history")
    async def api_room_history(room: str) -> Response:
        ...
"""

from __future__ import annotations

import hmac
import json
import time
from typing import TYPE_CHECKING, cast

from quart import Blueprint, Response, current_app, request

from .core import messages
from .errors import ProtocolError

if TYPE_CHECKING:
    from .app import WsprotoApp

ops = Blueprint("ops", __name__)
admin = Blueprint("admin", __name__)


def server() -> WsprotoApp:
    """The app serving the current request (its settings, hub and lifecycle)."""
    return cast("WsprotoApp", current_app)


def json_response(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


# -- operations ------------------------------------------------------------------


@ops.get("/")
async def index() -> Response:
    return Response(server().index_html, content_type="text/html; charset=utf-8")


@ops.get("/ping1")
async def ping1() -> Response:
    return await _ping("ping1")


@ops.get("/ping2")
async def ping2() -> Response:
    return await _ping("ping2")


async def _ping(channel: str) -> Response:
    await server().hub.publish(channel, str(messages.PING_CHANNELS[channel]))
    return json_response({"published": True})


@ops.get("/healthz")
async def healthz() -> Response:
    app = server()
    hub, lifecycle = app.hub, app.lifecycle
    status = hub.status()
    healthy = status.connected and not lifecycle.crashed
    body: dict[str, object] = {
        "status": "ok" if healthy else "unavailable",
        "server": app.settings.server_id,
        "broker": hub.broker.name,
        "broker_connected": status.connected,
        "connections": hub.connection_count,
        "uptime_seconds": round(time.monotonic() - hub.started, 3),
    }
    if not healthy:
        body["reason"] = lifecycle.reason if lifecycle.crashed else (
            status.reason or "broker unreachable"
        )  # fmt: skip
        return json_response(body, 503)
    return json_response(body)


@ops.get("/readyz")
async def readyz() -> Response:
    app = server()
    if app.lifecycle.crashed:
        return json_response({"ready": False, "reason": app.lifecycle.reason}, 503)
    if app.lifecycle.stopping or app.hub.draining:
        return json_response({"ready": False, "reason": "draining"}, 503)
    status = app.hub.status()
    if not status.ready:
        reason = status.reason or "subscriptions or presence not in place yet"
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True})


@ops.get("/metrics")
async def metrics() -> Response:
    return Response(server().hub.metrics.render(), content_type="text/plain; version=0.0.4")


# -- admin API -------------------------------------------------------------------


@admin.before_request
async def require_admin_token() -> Response | None:
    """401/403 before any admin handler runs (constant-time comparison)."""
    token = server().settings.admin_token
    if token is None:
        return json_response({"error": "admin API is off (ADMIN_TOKEN is unset)"}, 403)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return json_response({"error": "missing or wrong bearer token"}, 401)
    return None


@admin.post("/api/publish")
async def api_publish() -> Response:
    limit = server().settings.max_message_bytes
    data = await request.get_data(as_text=False)
    if len(data) > limit:
        # The same bound as a client frame: one publish must not queue
        # megabytes to every connection (and close them all with 1013).
        return json_response({"error": f"body over MAX_MESSAGE_BYTES ({limit})"}, 413)
    try:
        raw = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return json_response({"error": "body must be UTF-8 JSON"}, 400)
    try:
        # With authentication on the API is nobody: its messages carry "sub": null.
        identity: messages.Identity = {"sub": None} if server().settings.auth else {}
        channel, message = publication(raw, identity)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    await server().hub.publish_message(channel, message)
    return json_response({"published": True})


@admin.get("/api/rooms")
async def api_rooms() -> Response:
    counts = await server().hub.broker.rooms()
    rooms = [{"room": room, "members": n} for room, n in sorted(counts.items())]
    return json_response({"rooms": rooms})


@admin.get("/api/rooms/<room:room>/members")
async def api_members(room: str) -> Response:
    users = await server().hub.broker.members(room)
    return json_response({"room": room, "users": sorted(users)})


@admin.get("/api/servers")
async def api_servers() -> Response:
    """The live servers; our own count is exact (the broker's may be a second old)."""
    app = server()
    servers = dict(await app.hub.broker.servers())
    if app.settings.server_id in servers:
        servers[app.settings.server_id] = app.hub.connection_count
    listing = [{"id": sid, "connections": n} for sid, n in sorted(servers.items())]
    return json_response({"servers": listing})


@admin.get("/api/rooms/<room:room>/history")
async def api_room_history(room: str) -> Response:
    try:
        messages.validate_room(room)
        limit = history_limit()
    except (ValueError, ProtocolError) as exc:
        return json_response({"error": getattr(exc, "detail", str(exc))}, 400)
    return json_response({"room": room, **await history(messages.room_channel(room), limit)})


@admin.get("/api/chat/history")
async def api_chat_history() -> Response:
    try:
        limit = history_limit()
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response(await history(messages.CHAT_CHANNEL, limit))


def history_limit() -> int:
    """``?limit=K``: default and most ``HISTORY_SIZE``."""
    size = server().settings.history_size
    limit = request.args.get("limit")
    if limit is None:
        return size
    if not (limit.isascii() and limit.isdigit()) or int(limit) < 1:
        raise ValueError("limit must be an integer >= 1")
    return min(int(limit), size)


async def history(channel: str, limit: int) -> dict[str, object]:
    """A stream's position and its latest ``limit`` kept messages' contents, oldest first."""
    state = await server().hub.broker.stream(channel, with_log=limit > 0)
    kept = state.entries()[-limit:] if limit else []
    return {
        "epoch": state.position.epoch,
        "offset": state.position.offset,
        "messages": [json.loads(entry.text)["message"]["contents"] for entry in kept],
    }


def publication(
    raw: str, identity: messages.Identity = messages.NO_IDENTITY
) -> tuple[str, messages.Template]:
    """Validate a ``POST /api/publish`` body; ``ValueError`` says what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    channel = body.get("channel")
    try:
        if channel == "chat":
            content = messages.require_text(body.get("content"), "'content'")
            message = messages.new_message_received(content, identity=identity)
            return messages.CHAT_CHANNEL, message
        if channel == "chat-room":
            room = messages.validate_room(body.get("room"))
            text = messages.require_text(body.get("message"), "'message'")
            return messages.room_channel(room), messages.new_message(room, "api", text, identity)
    except ProtocolError as exc:
        raise ValueError(exc.detail) from None
    raise ValueError("'channel' must be 'chat' or 'chat-room'")
