"""A server whose broker fails on demand: the test double of a crashed hub.

``CrashingBroker`` is the memory broker, except that its ``serve`` raises once
a client subscribes to room ``crash`` (joins it). Served two ways, as the start
commands of PROTOCOL.md section 1 serve the real app:

    python -m tests.faults.crashing_hub                    # like wsproto-trio serve
    hypercorn --worker-class trio tests.faults.crashing_hub:app
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import trio

from wsproto_trio.app import WsprotoApp, create_app
from wsproto_trio.broker.memory import MemoryBroker
from wsproto_trio.cli import run_server
from wsproto_trio.config import Settings, from_env
from wsproto_trio.core.messages import room_channel
from wsproto_trio.server.lifecycle import Role

CRASH_ROOM = "crash"


class BrokerExploded(RuntimeError):
    pass


class CrashingBroker(MemoryBroker):
    def __init__(self, server_id: str) -> None:
        super().__init__(server_id)
        self.crash = trio.Event()

    async def serve(
        self, *args: Any, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(super().serve, *args))
            task_status.started()
            await self.crash.wait()
            raise BrokerExploded("the broker exploded (test double)")

    async def subscribe(self, channel: str) -> None:
        await super().subscribe(channel)
        if channel == room_channel(CRASH_ROOM):
            self.crash.set()


def crashing_app(settings: Settings, role: Role) -> WsprotoApp:
    return create_app(settings, CrashingBroker(settings.server_id), role=role)


class _Lazy:
    """Built in the Hypercorn worker at its first call, like ``wsproto_trio.app.app``."""

    def __init__(self) -> None:
        self._app: WsprotoApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = crashing_app(from_env(), Role.HYPERCORN)
        await self._app(scope, receive, send)


app = _Lazy()

if __name__ == "__main__":
    settings = from_env()
    sys.exit(trio.run(run_server, settings, crashing_app(settings, Role.COMMAND)))
