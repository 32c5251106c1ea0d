"""The Quart-trio application: HTTP routes and lifecycle, and the ``app`` Hypercorn loads.

``create_app(settings)`` builds an independent server (tests build several in one
process). The websocket path is handed at ASGI level to
``server.websocket.serve_websocket``; the HTTP routes are in ``routes``; how the
server starts and stops is ``server.lifecycle``.

``app`` is what ``hypercorn wsproto_trio.app:app`` serves. Importing this module
has no side effect: ``app`` reads the environment (and patches Hypercorn) only
when Hypercorn first calls it, in the worker process.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from typing import Any

from quart import Response
from quart_trio import QuartTrio
from werkzeug.routing import PathConverter

from .auth.verifier import Verifier
from .broker import Broker
from .broker.memory import MemoryBroker, MemoryNetwork
from .config import Settings, from_env
from .errors import BrokerUnavailable, ConfigError, Unavailable
from .logs import configure_logging
from .routes import admin, json_response, ops
from .server.hub import Hub
from .server.hypercorn_guard import guard_websocket_buffer
from .server.lifecycle import Lifecycle, Role
from .server.websocket import serve_websocket

WEBSOCKET_PATH = "/websockets"


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


class WsprotoApp(QuartTrio):
    """A QuartTrio app that owns one hub and routes the websocket path to it."""

    settings: Settings
    hub: Hub
    verifier: Verifier | None  # None: authentication is off
    lifecycle: Lifecycle
    index_html: bytes

    async def asgi_app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            await serve_websocket(self.settings, self.hub, scope, receive, send, self.verifier)
        else:
            await super().asgi_app(scope, receive, send)


class RoomConverter(PathConverter):
    """Like ``path``, but a room may also start with '/'."""

    regex = ".+?"
    part_isolating = False


def create_app(
    settings: Settings | None = None, broker: Broker | None = None, role: Role = Role.EMBEDDED
) -> WsprotoApp:
    """Build one server. ``broker`` defaults to what ``settings.redis_url`` asks for.

    ``role`` says who runs it (``Role``): the default suits a server inside
    another program's trio run; the start commands pass their own.
    """
    settings = settings if settings is not None else Settings()
    guard_websocket_buffer()
    app = WsprotoApp(__name__)
    app.settings = settings
    app.verifier = Verifier(settings.auth) if settings.auth is not None else None
    app.hub = Hub(settings.server_id, broker if broker is not None else make_broker(settings))
    app.lifecycle = Lifecycle(app.hub, settings.shutdown_timeout, role)
    # Quart cancels its lifespan nursery (where the lifecycle runs) this long
    # after the lifespan shutdown begins: let the one deadline govern instead.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.shutdown_timeout
    app.index_html = resources.files("wsproto_trio").joinpath("static/index.html").read_bytes()
    # Room names may hold any printable character, '/' included, even first:
    # match the whole remainder and keep '//' as it is.
    app.url_map.converters["room"] = RoomConverter
    app.url_map.merge_slashes = False
    app.register_blueprint(ops)
    app.register_blueprint(admin)
    app.register_error_handler(BrokerUnavailable, _broker_unavailable)
    app.register_error_handler(Unavailable, _broker_unavailable)

    @app.before_serving
    async def startup() -> None:
        configure_logging(settings)
        await app.nursery.start(app.lifecycle.serve)

    @app.after_serving
    async def shutdown() -> None:
        await app.lifecycle.shutdown()

    return app


async def _broker_unavailable(error: BrokerUnavailable | Unavailable) -> Response:
    """Every route: a broker that cannot answer now is a 503 with the reason."""
    detail = error.detail if isinstance(error, Unavailable) else str(error)
    return json_response({"error": detail}, 503)


def app_from_env(role: Role) -> WsprotoApp:
    """The app the environment describes; a bad setting exits 2 with one line naming it."""
    try:
        settings = from_env()
    except ConfigError as exc:
        print(f"wsproto-trio: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return create_app(settings, role=role)


class _AppFromEnvironment:
    """``app``: builds the real app from the environment at Hypercorn's first call.

    Not a module ``__getattr__``: Hypercorn finds the app with
    ``eval("app", vars(module))`` (``hypercorn.utils.load_application``),
    which reads the module's dict and never calls ``__getattr__``. Hypercorn's
    first call is the lifespan startup, inside the worker's ``trio.run``, where
    ``SystemExit`` would come out wrapped in an exception group with a
    traceback: a bad setting ends the worker with status 2 directly instead.
    """

    def __init__(self) -> None:
        self._app: WsprotoApp | None = None

    def resolve(self) -> WsprotoApp:
        if self._app is None:
            try:
                self._app = app_from_env(Role.HYPERCORN)
            except SystemExit as exc:
                sys.stderr.flush()
                os._exit(exc.code if isinstance(exc.code, int) else 2)
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.resolve()(scope, receive, send)


app = _AppFromEnvironment()
