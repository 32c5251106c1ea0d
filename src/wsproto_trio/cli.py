"""``wsproto-trio serve``: run one server with Hypercorn in-process.

Running Hypercorn ourselves (``hypercorn.trio.serve``) gives us the shutdown
trigger: on SIGTERM or Ctrl-C the server stops accepting, closes every socket
with 1001, removes its members from presence and exits within
``SHUTDOWN_TIMEOUT``; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import create_app
from .chaos.command import add_parser as add_chaos_command
from .config import Settings, from_env
from .errors import ConfigError
from .logs import configure_logging

log = logging.getLogger("wsproto_trio.cli")

_HTTP_GRACE = 0.5


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
    ``graceful_timeout``). ``run_server`` cuts that wait once our own drain is
    done; other users of ``hypercorn_config`` (in-process test servers) would
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


async def run_server(settings: Settings) -> None:
    app = create_app(settings)
    config = hypercorn_config(settings)
    enable_heartbeat(config, settings)
    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("shutting down: closing connections with 1001")
        app.hub.drain()
        await app.hub.deregister()
        with trio.move_on_after(settings.shutdown_timeout):
            await app.hub.wait_no_connections()
        # Every websocket of ours is closed. Hypercorn would now wait up to
        # graceful_timeout for its per-connection tasks, and a ping task
        # sleeps out HEARTBEAT_INTERVAL after its socket closed; leave half a
        # second for plain HTTP requests in flight and no more.
        config.graceful_timeout = min(config.graceful_timeout, _HTTP_GRACE)

    async def watch_signals(
        *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                if stop.is_set():
                    log.warning("second signal: exiting now")
                    os._exit(1)
                log.info("received %s", signal.Signals(signum).name)
                stop.set()

    async def enforce_deadline() -> None:
        # The graceful path is bounded piecewise (broker calls, Hypercorn's
        # graceful_timeout, the shielded presence clean-up of each connection),
        # and those bounds add up. This makes SHUTDOWN_TIMEOUT the bound on the
        # whole stop: past it, exit now, like a second signal. Presence left
        # behind is reaped by the other servers after PRESENCE_TTL.
        await stop.wait()
        await trio.sleep(settings.shutdown_timeout)
        log.warning(
            "shutdown did not finish within SHUTDOWN_TIMEOUT=%ss; exiting now",
            settings.shutdown_timeout,
        )
        logging.shutdown()
        os._exit(1)

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        nursery.start_soon(enforce_deadline)
        await serve(app, config, shutdown_trigger=shutdown_trigger)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wsproto-trio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run a server (configured by environment)")
    serve_cmd.add_argument("--port", type=int, help="overrides PORT")
    serve_cmd.add_argument("--host", help="overrides HOST (default 0.0.0.0)")
    serve_cmd.add_argument("--redis-url", help="overrides REDIS_URL")
    add_chaos_command(commands)
    args = parser.parse_args(argv)
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
    trio.run(run_server, settings)


if __name__ == "__main__":
    main()
