"""Commands and scripts on a Redis Cluster: one command pipe per master.

redis-py's ``RedisCluster`` is sound for commands: it routes by slot and
follows MOVED and ASK, and its pipeline splits a batch by node. What it cannot
do is keep one slow shard from delaying the others: one pipe runs one batch at
a time, so a batch that waits on a master that just died (connect timeouts,
topology reloads) would stall the chat and every room on the healthy masters.
So each command goes to the pipe of the master that owns its first key (our
own topology, from the pub/sub bridge); each pipe batches as the single-Redis
broker does, and ``RedisCluster`` still corrects a stale route.

Foreign errors: RedisCluster raises ``RedisClusterException`` (not a
``RedisError``) and ``ClusterDownError`` for whole batches; both become a
connection error here, so the pipe reports ``BrokerUnavailable`` to callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.exceptions
import trio

from ..bridge import REDIS_ERRORS, CommandPipe, Done, _Call
from .topology import Address, Topology, slot_of

_KEYLESS = frozenset({"PUBLISH", "PING", "TIME"})


ClientFactory = Callable[[], redis.RedisCluster]


class ShardPipe(CommandPipe):
    """A ``CommandPipe`` over a ``RedisCluster`` client of its own.

    The client is made in the pipe's worker thread on first use (making one
    reads the cluster's slots: network I/O that must neither block the event
    loop nor stop a server from starting while the cluster is away). Its own,
    because a cancelled pipe shuts its client's sockets under its thread, and
    that must not hit the threads of the other pipes."""

    def __init__(self, placeholder: redis.Redis, factory: ClientFactory, timeout: float) -> None:
        super().__init__(placeholder, timeout)
        self._factory = factory
        self._cluster: redis.RedisCluster | None = None
        self._interrupted = False

    def _run_pipeline(self, batch: list[_Call]) -> list[Any]:
        try:
            if self._cluster is None:
                self._cluster = self._factory()
            self._client = self._cluster  # type: ignore[assignment]  # the pipe only calls pipeline()
            return super()._run_pipeline(batch)
        except REDIS_ERRORS:
            raise
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise redis.exceptions.ConnectionError(f"redis cluster: {exc}") from exc
        except (TypeError, AttributeError) as exc:
            if not self._interrupted:
                raise
            # redis-py tripping over a socket that we shut under it: not a bug of ours.
            raise redis.exceptions.ConnectionError("interrupted") from exc

    def interrupt(self) -> None:
        self.close()

    def close(self) -> None:
        self._interrupted = True
        if self._cluster is not None:
            self._cluster.disconnect_connection_pools()  # type: ignore[no-untyped-call]


def first_key(args: Sequence[Any]) -> str | None:
    """The key (or sharded channel) that decides where a command runs."""
    name = str(args[0]).upper()
    if name in _KEYLESS or len(args) < 2:
        return None
    if name in ("EVAL", "EVALSHA"):
        return str(args[3]) if int(args[2]) > 0 else None
    return str(args[1])


class ShardRouter(CommandPipe):
    """The ``CommandPipe`` interface over one ``ShardPipe`` per master."""

    def __init__(
        self,
        placeholder: redis.Redis,
        factory: ClientFactory,
        timeout: float,
        topology: Callable[[], Topology | None],
    ) -> None:
        super().__init__(placeholder, timeout)  # never runs a pipeline itself
        self._placeholder = placeholder
        self._factory = factory
        self._topology = topology
        self._default = ShardPipe(placeholder, factory, timeout)
        self._pipes: dict[Address, ShardPipe] = {}
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._default.serve)
                task_status.started()
        finally:
            self._nursery = None
            for pipe in [self._default, *self._pipes.values()]:
                pipe.close()

    def _pipe_for(self, args: Sequence[Any]) -> ShardPipe:
        key = first_key(args)
        topology = self._topology()
        if key is None or topology is None:
            return self._default
        owner = topology.owner(slot_of(key))
        if owner is None or self._nursery is None:
            return self._default
        pipe = self._pipes.get(owner)
        if pipe is None:
            # One per master address ever seen: a handful, idle when not used.
            pipe = ShardPipe(self._placeholder, self._factory, self._timeout)
            self._pipes[owner] = pipe
            self._nursery.start_soon(pipe.serve)
        return pipe

    async def submit(self, command: tuple[Any, ...], then: Done) -> None:
        """On the master's pipe: one stream's publications keep their order (they
        share a slot); different masters' run concurrently."""
        await self._pipe_for(command).submit(command, then)

    async def call_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command on its master's pipe; commands for one master keep their
        order and share a round trip, masters run concurrently."""
        groups: dict[int, tuple[ShardPipe, list[int]]] = {}
        for index, args in enumerate(commands):
            pipe = self._pipe_for(args)
            groups.setdefault(id(pipe), (pipe, []))[1].append(index)
        if len(groups) == 1:
            pipe, _ = next(iter(groups.values()))
            return await pipe.call_many(commands)
        results: list[Any] = [None] * len(commands)
        failures: list[BaseException] = []

        async def run(pipe: ShardPipe, indexes: list[int]) -> None:
            try:
                answers = await pipe.call_many([commands[i] for i in indexes])
            except Exception as exc:  # re-raised below, after every group is done
                failures.append(exc)
                return
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer

        async with trio.open_nursery() as nursery:
            for pipe, indexes in groups.values():
                nursery.start_soon(run, pipe, indexes)
        if failures:
            raise failures[0]
        return results
