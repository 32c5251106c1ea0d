"""``wsproto-trio serve``: run one server with Hypercorn in-process.

Running Hypercorn ourselves (``hypercorn.trio.serve``) gives us its shutdown
trigger. The stop itself (SIGTERM or Ctrl-C: close every socket with 1001,
leave presence, exit within ``SHUTDOWN_TIMEOUT``; a second signal exits at
once) is ``server.lifecycle``, the same under plain ``hypercorn``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import WsprotoApp, create_app
from .auth import token as token_command
from .chaos.command import add_parser as add_chaos_command
from .config import Settings, from_env
from .errors import ConfigError
from .logs import configure_logging
from .server.lifecycle import Role

log = logging.getLogger("wsproto_trio.cli")


def enable_heartbeat(config: Config, settings: Settings) -> None:
    """Find dead clients with websocket pings (``wsproto-trio serve`` only).

    A client process stopped with SIGSTOP, or behind a cut cable, sends nothing,
    and its kernel may still ACK, so TCP keepalive cannot tell. ASGI shows the
    app neither pings nor pongs, and Hypercorn drops the pongs it receives, but
    every pong is bytes on the socket: Hypercorn pings every
    ``HEARTBEAT_INTERVAL`` and its ``read_timeout`` closes a connection that
    sent nothing for ``dead_client_timeout`` seconds; the app then sees
    ``websocket.disconnect`` and leaves the client's rooms (``LeftRoom`` to the
    others). Under the plain ``hypercorn`` command pass
    ``--websocket-ping-interval`` and ``--read-timeout`` for the same.

    Not in ``hypercorn_config``: Hypercorn's ping task sleeps out its interval
    after its websocket has closed, and a server stopping waits for it (up to
    ``graceful_timeout``). Under ``wsproto-trio serve`` the lifecycle cuts that
    wait once its drain is done; other users of ``hypercorn_config`` (in-process test servers) would
    pay it on every stop.
    """
    config.websocket_ping_interval = settings.heartbeat_interval
    config.read_timeout = dead_client_timeout(settings)


def dead_client_timeout(settings: Settings) -> int:
    """Seconds without a byte from a websocket client before it is dropped.

    Hypercorn pings every ``HEARTBEAT_INTERVAL``; a live client answers each ping
    with a pong, so it is never silent much longer than one interval. Two
    intervals allow one late pong. Whole seconds: Hypercorn types it as int.
    """
    return max(1, math.ceil(2 * settings.heartbeat_interval))


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn's settings, for ``wsproto-trio serve`` and in-process test servers.

    ``HANDSHAKE_TIMEOUT`` becomes ``keep_alive_timeout``. Hypercorn hands the app
    nothing until a whole request head has arrived, so a timeout in the app
    cannot see a client that connects and stays silent (or trickles its
    headers). Hypercorn's idle timer runs from accept until the request head is
    parsed and closes the socket when it fires: that is the connect timeout. (It
    also bounds idle keep-alive between HTTP requests.)
    """
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.websocket_max_message_size = settings.max_message_bytes
    config.graceful_timeout = settings.shutdown_timeout
    config.keep_alive_timeout = settings.handshake_timeout
    # Hypercorn's default listen backlog is 100: when hundreds of clients reconnect
    # at once (a server restarts behind a load balancer) the kernel drops the
    # excess SYNs and those clients wait out TCP's retransmission backoff (1, 2,
    # 4, ... 32 s). Linux caps this at net.core.somaxconn (4096 here).
    config.backlog = 2048
    config.accesslog = None
    config.errorlog = "-"
    return config


async def run_server(settings: Settings, app: WsprotoApp | None = None) -> int:
    """Serve until stopped; returns the exit status (``server.lifecycle`` says when).

    ``app``, when given, must be built with ``Role.COMMAND`` (tests pass a test double).
    """
    app = app if app is not None else create_app(settings, role=Role.COMMAND)
    config = hypercorn_config(settings)
    enable_heartbeat(config, settings)
    await serve(
        app, config, shutdown_trigger=partial(app.lifecycle.hypercorn_shutdown_trigger, config)
    )
    status = app.lifecycle.exit_status
    if status != 0:
        log.warning("stopped (%s); exiting with status %d", app.lifecycle.reason, status)
    return status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wsproto-trio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run a server (configured by environment)")
    serve_cmd.add_argument("--port", type=int, help="overrides PORT")
    serve_cmd.add_argument("--host", help="overrides HOST (default 0.0.0.0)")
    serve_cmd.add_argument("--redis-url", help="overrides REDIS_URL")
    token_command.add_parser(commands)
    add_chaos_command(commands)
    args = parser.parse_args(argv)
    if args.command == "token":
        raise SystemExit(token_command.run(args))
    if args.command == "chaos":
        raise SystemExit(args.run(args))
    env = dict(os.environ)
    for name, value in (("PORT", args.port), ("HOST", args.host), ("REDIS_URL", args.redis_url)):
        if value is not None:
            env[name] = str(value)
    try:
        settings = from_env(env)
    except ConfigError as exc:
        print(f"wsproto-trio: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    sys.exit(trio.run(run_server, settings))


if __name__ == "__main__":
    main()
