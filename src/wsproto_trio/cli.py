"""``wsproto-trio serve``: run one server with Hypercorn in-process.

Running Hypercorn ourselves (``hypercorn.trio.serve``) gives us the shutdown
trigger: on SIGTERM or Ctrl-C the server stops accepting, closes every socket
with 1001, removes its members from presence and exits within
``SHUTDOWN_TIMEOUT``; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import create_app
from .config import Settings, from_env
from .errors import ConfigError
from .logs import configure_logging

log = logging.getLogger("wsproto_trio.cli")


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.websocket_max_message_size = settings.max_message_bytes
    config.graceful_timeout = settings.shutdown_timeout
    config.accesslog = None
    config.errorlog = "-"
    return config


async def run_server(settings: Settings) -> None:
    app = create_app(settings)
    config = hypercorn_config(settings)
    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("shutting down: closing connections with 1001")
        app.hub.drain()
        await app.hub.deregister()
        with trio.move_on_after(settings.shutdown_timeout):
            await app.hub.wait_no_connections()

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

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        await serve(app, config, shutdown_trigger=shutdown_trigger)
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wsproto-trio", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run a server (configured by environment)")
    serve_cmd.add_argument("--port", type=int, help="overrides PORT")
    serve_cmd.add_argument("--host", help="overrides HOST (default 0.0.0.0)")
    serve_cmd.add_argument("--redis-url", help="overrides REDIS_URL")
    args = parser.parse_args(argv)
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
