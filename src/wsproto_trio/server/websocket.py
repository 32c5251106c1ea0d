"""The websocket route at ASGI level: handshake, refusal, then one ``Connection``.

It bypasses Quart's websocket wrapper and talks ASGI directly: per-frame
overhead bounds fan-out speed, and the raw events give us subprotocol
negotiation, handshake rejection (503/403) and close codes without another
layer. It lives apart from the HTTP app so the handshake (auth, refusals) can
change without touching routes or lifecycle.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from ..auth.handshake import authenticate
from ..auth.verifier import Verifier
from ..config import Settings
from ..core import messages
from ..errors import ProtocolError
from ..logs import server_id_var
from .connection import Connection, Receive, Send
from .hub import Hub

log = logging.getLogger("wsproto_trio.app")


async def serve_websocket(
    settings: Settings,
    hub: Hub,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    verifier: Verifier | None = None,
) -> None:
    """Handshake, refusals (503/403, 401 without a valid token, 400), then one connection."""
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
    claims = None
    if verifier is not None:
        # Before any other check of the query: a client without a valid token
        # learns nothing else about the server.
        outcome = await authenticate(verifier, scope)
        if isinstance(outcome, tuple):
            status, reason = outcome
            log.info("websocket refused with %d: %s", status, reason)
            await _reject(scope, send, status, reason)
            return
        claims = outcome
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
    connection = Connection(settings, hub, batched=batched, claims=claims, verifier=verifier)
    await connection.run(receive, send, chat)


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
