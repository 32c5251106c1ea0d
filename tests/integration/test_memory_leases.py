"""The in-process broker's leases on virtual time: a crashed server is reaped.

A ``MemoryBroker`` whose task is cancelled without ``deregister`` stands for a
server that died; the surviving broker reaps its members (one ``LeftRoom`` each)
once its lease lapses, and not before.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from wsproto_trio.broker import Member
from wsproto_trio.broker.memory import MemoryBroker, MemoryNetwork
from wsproto_trio.core import messages

TTL = 15.0


class Sink:
    def __init__(self) -> None:
        self.payloads: list[str] = []

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        self.payloads.extend(payload for _, payload in batch)

    def resubscribed(self, channels: Sequence[str]) -> None:
        pass

    def local_members(self) -> list[Member]:
        return []

    @property
    def connection_count(self) -> int:
        return 0


def member(room: str, user: str) -> Member:
    return Member(room, user, messages.joined_room(room, user), messages.left_room(room, user))


async def test_crashed_memory_broker_is_reaped_after_its_lease(
    autojump_clock: trio.abc.Clock,
) -> None:
    network = MemoryNetwork()
    survivor, doomed = MemoryBroker("a", network, TTL), MemoryBroker("b", network, TTL)
    sink = Sink()
    async with trio.open_nursery() as nursery:
        await nursery.start(survivor.serve, sink)
        crash = trio.CancelScope()

        async def run_doomed(task_status: trio.TaskStatus[None]) -> None:
            with crash:
                await doomed.serve(Sink(), task_status=task_status)

        await nursery.start(run_doomed)
        await survivor.subscribe("room:r")
        await doomed.join(member("r", "u1"), with_log=False)
        crashed_at = trio.current_time()
        crash.cancel()  # no deregister: a crash
        await trio.sleep(TTL * 0.9)
        assert await survivor.members("r") == ["u1"]  # the lease still holds
        while await survivor.members("r"):
            await trio.sleep(0.5)
        waited = trio.current_time() - crashed_at
        assert TTL <= waited <= TTL * 4 / 3 + 1
        assert sink.payloads.count(messages.left_room("r", "u1")) == 1
        assert await survivor.servers() == {"a": 0}
        nursery.cancel_scope.cancel()
