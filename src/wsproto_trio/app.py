"""The Quart-trio application: HTTP routes, and the websocket route at ASGI level.

``create_app(settings)`` builds an independent server (tests build several in one
process). The websocket endpoint bypasses Quart's websocket wrapper and talks
ASGI directly: per-frame overhead bounds fan-out speed, and the raw events give
us subprotocol negotiation, handshake rejection (503/403) and close codes
without another layer. Every other route is ordinary Quart.

``app`` at the bottom is what ``hypercorn wsproto_trio.app:app`` serves; it is
configured from the environment.
"""

from __future__ import annotations

import hmac
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine
from functools import wraps
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.routing import PathConverter

from .broker import Broker
from .broker.memory import MemoryBroker, MemoryNetwork
from .config import Settings, from_env
from .core import messages
from .errors import BrokerUnavailable, ConfigError, ProtocolError, Unavailable
from .logs import configure_logging, server_id_var
from .server.connection import Connection, Receive, Send
from .server.hub import Hub
from .server.hypercorn_guard import guard_websocket_buffer

log = logging.getLogger("wsproto_trio.app")

WEBSOCKET_PATH = "/websockets"
P = ParamSpec("P")
R = TypeVar("R")


def make_broker(settings: Settings) -> Broker:
    if settings.redis_url is None:
        network = MemoryNetwork(
            history_size=settings.history_size, history_ttl=settings.history_ttl
        )
        return MemoryBroker(settings.server_id, network, settings.presence_ttl)
    from .broker.redis import RedisBroker

    return RedisBroker(
        settings.redis_url,
        settings.server_id,
        settings.presence_ttl,
        history_size=settings.history_size,
        history_ttl=settings.history_ttl,
    )


class Server(QuartTrio):
    """A QuartTrio app that owns one hub and routes the websocket path to it."""

    settings: Settings
    hub: Hub
    _hub_scope: trio.CancelScope

    async def asgi_app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            await serve_websocket(self.settings, self.hub, scope, receive, send)
        else:
            await super().asgi_app(scope, receive, send)

    async def start_hub(self) -> None:
        # The lifespan nursery outlives the app's shutdown hook, so the hub
        # runs in a scope of its own that ``stop_hub`` cancels.
        self._hub_scope = trio.CancelScope()
        await self.nursery.start(self._serve_hub)

    async def _serve_hub(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._hub_scope:
            await self.hub.serve(task_status=task_status)

    async def stop_hub(self) -> None:
        self.hub.drain()
        await self.hub.deregister()
        self._hub_scope.cancel()


async def serve_websocket(
    settings: Settings, hub: Hub, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    server_id_var.set(settings.server_id)
    # Defence in depth only: Hypercorn calls the app once the request head is
    # in, so ``websocket.connect`` is already waiting here. The guard against a
    # client that connects and stays silent is Hypercorn's keep_alive_timeout,
    # set to HANDSHAKE_TIMEOUT in ``cli.hypercorn_config``.
    with trio.move_on_after(settings.handshake_timeout) as handshake:
        event = await receive()
    if handshake.cancelled_caught or event["type"] != "websocket.connect":
        return
    refusal = _refusal(settings, hub, scope)
    if refusal is not None:
        status, reason = refusal
        log.info("websocket refused with %d: %s", status, reason)
        await _reject(scope, send, status, reason)
        return
    try:
        chat = messages.chat_recovery(scope.get("query_string", b"").decode("latin-1"))
    except ProtocolError as exc:
        log.info("websocket refused with 400: %s", exc.detail)
        await _reject(scope, send, 400, exc.detail)
        return
    batched = messages.NDJSON_SUBPROTOCOL in scope.get("subprotocols", ())
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": messages.NDJSON_SUBPROTOCOL if batched else None,
        }
    )
    await Connection(settings, hub, batched=batched).run(receive, send, chat)


def _refusal(settings: Settings, hub: Hub, scope: dict[str, Any]) -> tuple[int, str] | None:
    if hub.draining:
        return 503, "server is shutting down"
    if settings.max_connections and len(hub.connections) >= settings.max_connections:
        return 503, "server is at MAX_CONNECTIONS"
    if settings.allowed_origins:
        origin = next(
            (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"origin"), None
        )
        if origin not in settings.allowed_origins:
            return 403, f"origin {origin!r} is not allowed"
    return None


async def _reject(scope: dict[str, Any], send: Send, status: int, reason: str) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1013})


class RoomConverter(PathConverter):
    """Like ``path``, but a room may also start with '/'."""

    regex = ".+?"
    part_isolating = False


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def create_app(settings: Settings | None = None, broker: Broker | None = None) -> Server:
    """Build one server. ``broker`` defaults to what ``settings.redis_url`` asks for."""
    settings = settings if settings is not None else Settings()
    guard_websocket_buffer()
    app = Server(__name__)
    # Room names may hold any printable character, '/' included, even first:
    # match the whole remainder and keep '//' as it is.
    app.url_map.converters["room"] = RoomConverter
    app.url_map.merge_slashes = False
    app.settings = settings
    app.hub = Hub(settings.server_id, broker if broker is not None else make_broker(settings))
    hub = app.hub
    index_html = resources.files("wsproto_trio").joinpath("static/index.html").read_bytes()

    @app.before_serving
    async def startup() -> None:
        configure_logging(settings)
        await app.start_hub()

    @app.after_serving
    async def shutdown() -> None:
        await app.stop_hub()

    def admin(
        handler: Callable[P, Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R | Response]]:
        @wraps(handler)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            if settings.admin_token is None:
                return _json({"error": "admin API is off (ADMIN_TOKEN is unset)"}, 403)
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {settings.admin_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _json({"error": "missing or wrong bearer token"}, 401)
            return await handler(*args, **kwargs)

        return guarded

    @app.get("/")
    async def index() -> Response:
        return Response(index_html, content_type="text/html; charset=utf-8")

    @app.get("/ping1")
    async def ping1() -> Response:
        return await _ping("ping1")

    @app.get("/ping2")
    async def ping2() -> Response:
        return await _ping("ping2")

    async def _ping(channel: str) -> Response:
        try:
            await hub.publish(channel, str(messages.PING_CHANNELS[channel]))
        except Unavailable as exc:
            return _json({"error": exc.detail}, 503)
        return _json({"published": True})

    @app.get("/healthz")
    async def healthz() -> Response:
        status = hub.status()
        body = {
            "status": "ok" if status.connected else "unavailable",
            "server": settings.server_id,
            "broker": hub.broker.name,
            "broker_connected": status.connected,
            "connections": len(hub.connections),
            "uptime_seconds": round(time.monotonic() - hub.started, 3),
        }
        if not status.connected:
            body["reason"] = status.reason or "broker unreachable"
            return _json(body, 503)
        return _json(body)

    @app.get("/readyz")
    async def readyz() -> Response:
        status = hub.status()
        if hub.draining:
            return _json({"ready": False, "reason": "draining"}, 503)
        if not status.ready:
            reason = status.reason or "subscriptions or presence not in place yet"
            return _json({"ready": False, "reason": reason}, 503)
        return _json({"ready": True})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(hub.metrics.render(), content_type="text/plain; version=0.0.4")

    @app.post("/api/publish")
    @admin
    async def api_publish() -> Response:
        data = await request.get_data(as_text=False)
        if len(data) > settings.max_message_bytes:
            # The same bound as a client frame: one publish must not queue
            # megabytes to every connection (and close them all with 1013).
            return _json(
                {"error": f"body over MAX_MESSAGE_BYTES ({settings.max_message_bytes})"}, 413
            )
        try:
            raw = data.decode("utf-8") if isinstance(data, bytes) else data
        except UnicodeDecodeError:
            return _json({"error": "body must be UTF-8 JSON"}, 400)
        try:
            channel, message = _publication(raw)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        try:
            await hub.publish_message(channel, message)
        except Unavailable as exc:
            return _json({"error": exc.detail}, 503)
        return _json({"published": True})

    @app.get("/api/rooms")
    @admin
    async def api_rooms() -> Response:
        try:
            counts = await hub.broker.rooms()
        except BrokerUnavailable as exc:
            return _json({"error": str(exc)}, 503)
        rooms = [{"room": room, "members": n} for room, n in sorted(counts.items())]
        return _json({"rooms": rooms})

    @app.get("/api/rooms/<room:room>/members")
    @admin
    async def api_members(room: str) -> Response:
        try:
            users = await hub.broker.members(room)
        except BrokerUnavailable as exc:
            return _json({"error": str(exc)}, 503)
        return _json({"room": room, "users": sorted(users)})

    async def _history(channel: str) -> dict[str, object]:
        limit = request.args.get("limit")
        count = settings.history_size
        if limit is not None:
            if not limit.isdigit() or not limit.isascii() or int(limit) < 1:
                raise ValueError("limit must be an integer >= 1")
            count = min(int(limit), settings.history_size)
        state = await hub.broker.stream(channel, with_log=count > 0)
        kept = [json.loads(e.text)["message"]["contents"] for e in state.entries()]
        return {
            "epoch": state.position.epoch,
            "offset": state.position.offset,
            "messages": kept[-count:] if count else [],
        }

    @app.get("/api/rooms/<room:room>/history")
    @admin
    async def api_room_history(room: str) -> Response:
        try:
            messages.validate_room(room)
            body = await _history(messages.room_channel(room))
        except (ValueError, ProtocolError) as exc:
            return _json({"error": getattr(exc, "detail", str(exc))}, 400)
        except BrokerUnavailable as exc:
            return _json({"error": str(exc)}, 503)
        return _json({"room": room, **body})

    @app.get("/api/chat/history")
    @admin
    async def api_chat_history() -> Response:
        try:
            body = await _history(messages.CHAT_CHANNEL)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        except BrokerUnavailable as exc:
            return _json({"error": str(exc)}, 503)
        return _json(body)

    @app.get("/api/servers")
    @admin
    async def api_servers() -> Response:
        try:
            servers = await hub.broker.servers()
        except BrokerUnavailable as exc:
            return _json({"error": str(exc)}, 503)
        listing = [{"id": sid, "connections": n} for sid, n in sorted(servers.items())]
        return _json({"servers": listing})

    return app


def _publication(raw: str) -> tuple[str, messages.Template]:
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
            return messages.CHAT_CHANNEL, messages.new_message_received(content)
        if channel == "chat-room":
            room = messages.validate_room(body.get("room"))
            text = messages.require_text(body.get("message"), "'message'")
            return messages.room_channel(room), messages.new_message(room, "api", text)
    except ProtocolError as exc:
        raise ValueError(exc.detail) from None
    raise ValueError("'channel' must be 'chat' or 'chat-room'")


def _app_from_env() -> Server:
    try:
        settings = from_env()
    except ConfigError as exc:
        print(f"wsproto-trio: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings)


app = _app_from_env()
