"""redis-py bridged into trio without trio-asyncio, and without blocking the event loop.

Two pieces, both owned by a broker's ``serve``:

- ``CommandPipe``: commands (PUBLISH, scripts, presence) go through one task that
  sends whatever is queued when the previous round trip ends as one pipeline,
  from a worker thread. One thread hop per message would cap a server near 3k
  publishes/s; batched, the hop is shared by every message in the batch. The
  thread is never abandoned (its work has side effects in Redis); when the
  broker is cancelled, the client's sockets are shut so the thread returns at
  once instead of after its socket timeout.
- ``PubSubLink``: one pub/sub connection, driven on the trio thread. redis-py's
  ``Connection`` opens it (in a worker thread: AUTH, TLS, RESP handshake) and
  parses replies; we write commands ourselves with non-blocking ``send`` after
  ``wait_writable`` under a deadline, and read after ``wait_readable`` by
  draining every complete reply with a zero timeout. So a Redis that stops
  reading or answering can delay nothing but this link. A reply that arrives in
  two TCP pieces makes the zero-timeout read raise ``TimeoutError`` with the
  first piece kept in the parser: we wait for more bytes. redis-py's retries
  would instead reconnect and silently drop messages, so the link retries
  nothing; reconnecting (and filling gaps from history) is the broker's job.

redis-py's exceptions become ``BrokerUnavailable`` in ``translate`` only.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.connection
import redis.exceptions
import trio

from ..errors import BrokerUnavailable

log = logging.getLogger("wsproto_trio.broker")

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
MAX_BATCH = 1000


@contextmanager
def translate() -> Iterator[None]:
    """The one place where redis-py's errors become ours."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise BrokerUnavailable(f"redis unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerUnavailable(f"redis error: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script sent by SHA, with its text as the fallback after NOSCRIPT."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())
        _SCRIPTS[self.sha] = self

    def call(self, keys: Sequence[str], *args: Any) -> tuple[Any, ...]:
        """The command that runs this script (for ``CommandPipe.call_many``)."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


_SCRIPTS: dict[str, Script] = {}


@dataclass(slots=True, eq=False)
class _Call:
    args: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class CommandPipe:
    """Batches commands from many tasks into one pipeline per round trip."""

    def __init__(self, client: redis.Redis, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._in, self._out = trio.open_memory_channel[_Call](10_000)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._out:
            task_status.started()
            while True:
                batch = [await self._out.receive()]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._out.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._execute(batch)

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            results = await self._in_thread(self._run_pipeline, batch)
        except REDIS_ERRORS as exc:
            failure = BrokerUnavailable(f"redis unreachable: {exc}")
            for call in batch:
                call.error = failure
                call.done.set()
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                call.error = BrokerUnavailable(f"redis error: {result}")
            else:
                call.result = result
            call.done.set()

    def _run_pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for call in batch:
            pipe.execute_command(*call.args)  # type: ignore[no-untyped-call]  # untyped in redis-py
        results: list[Any] = pipe.execute(raise_on_error=False)
        # Scripts go by SHA; after a Redis restart (or SCRIPT FLUSH) they are
        # unknown: send those again with their text, in their original order.
        retry = [
            i
            for i, result in enumerate(results)
            if isinstance(result, redis.exceptions.NoScriptError) and batch[i].args[1] in _SCRIPTS
        ]
        if retry:
            pipe = self._client.pipeline(transaction=False)
            for i in retry:
                text = _SCRIPTS[batch[i].args[1]].text
                pipe.execute_command("EVAL", text, *batch[i].args[2:])  # type: ignore[no-untyped-call]
            for i, result in zip(retry, pipe.execute(raise_on_error=False), strict=True):
                results[i] = result
        return results

    async def _in_thread(self, work: Callable[[list[_Call]], list[Any]], batch: list[_Call]) -> Any:
        """Run ``work`` in a worker thread that is never abandoned; on
        cancellation, shut the client's sockets so that it returns at once."""
        result: Any = None
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:

            async def interrupt_when_cancelled() -> None:
                try:
                    await trio.sleep_forever()
                except trio.Cancelled:
                    self._client.connection_pool.disconnect()
                    raise

            nursery.start_soon(interrupt_when_cancelled)
            try:
                result = await trio.to_thread.run_sync(work, batch)
            except Exception as exc:  # re-raised below, outside the nursery's group
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    async def call(self, *args: Any) -> Any:
        """One command through the pipe; ``BrokerUnavailable`` on any failure."""
        return (await self.call_many([args]))[0]

    async def call_many(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Several commands queued together, so they share a round trip, in order."""
        calls = [_Call(args) for args in commands]
        # A bound on the wait as well as on the socket: a wedged Redis must
        # turn into `unavailable` for the client, not a hung reader task.
        with trio.move_on_after(self._timeout * 2) as scope:
            try:
                for call in calls:
                    await self._in.send(call)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise BrokerUnavailable("redis broker stopped") from None
            for call in calls:
                await call.done.wait()
        if scope.cancelled_caught:
            raise BrokerUnavailable("redis did not answer in time")
        for call in calls:
            if call.error is not None:
                raise call.error
        return [call.result for call in calls]

    async def script(self, script: Script, keys: Sequence[str], *args: Any) -> Any:
        return await self.call(*script.call(keys, *args))


class PubSubLink:
    """One pub/sub connection, written and read on the trio thread without blocking."""

    def __init__(self, connection: redis.connection.AbstractConnection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._sock: socket.socket | None = None
        # Commands from several tasks (subscribes of joins, the reader's PING)
        # must not interleave on the socket, and go out in the order asked.
        self._writing = trio.StrictFIFOLock()

    async def open(self) -> None:
        """Connect (TCP, TLS, AUTH) in a worker thread bounded by the connect timeout."""
        connection = self._connection
        await trio.to_thread.run_sync(connection.connect)
        sock = getattr(connection, "_sock", None)
        if sock is None:
            raise redis.exceptions.ConnectionError("pub/sub connection did not open")
        self._sock = sock

    def close(self) -> None:
        """Close; a task waiting on the socket wakes with ``ConnectionError``."""
        sock, self._sock = self._sock, None
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
        self._connection.disconnect()  # type: ignore[no-untyped-call]  # untyped in redis-py

    async def send(self, *args: str) -> None:
        """Write one command; never blocks the event loop, fails after the timeout."""
        sock = self._sock
        if sock is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        packed = self._connection.pack_command(*args)  # type: ignore[no-untyped-call]
        data = memoryview(b"".join(packed))
        with trio.move_on_after(self._timeout) as scope:
            async with self._writing:
                await self._write(sock, data)
        if scope.cancelled_caught:
            # Half a command may be on the wire: the link is unusable now.
            self.close()
            raise redis.exceptions.TimeoutError("redis is not reading the pub/sub connection")

    @staticmethod
    async def _write(sock: socket.socket, data: memoryview) -> None:
        while data:
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                raise redis.exceptions.ConnectionError("pub/sub connection closed") from None
            try:
                sent = sock.send(data)
            except BlockingIOError:
                continue
            data = data[sent:]

    async def wait_readable(self, seconds: float) -> bool:
        """Wait until bytes arrive; False after ``seconds`` of silence."""
        sock = self._sock
        if sock is None:
            raise redis.exceptions.ConnectionError("pub/sub connection not open")
        with trio.move_on_after(seconds):
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                raise redis.exceptions.ConnectionError("pub/sub connection closed") from None
            return True
        return False

    def drain(self) -> list[Any]:
        """Every complete reply already received, parsed, without blocking."""
        connection = self._connection
        if self._sock is None or getattr(connection, "_sock", None) is None:
            # redis-py would reconnect (blocking) inside can_read: never here.
            raise redis.exceptions.ConnectionError("pub/sub connection closed")
        replies: list[Any] = []
        while True:
            try:
                if not connection.can_read(timeout=0):
                    break
                reply = connection.read_response(disconnect_on_error=False, timeout=0)
            except redis.exceptions.TimeoutError:
                break  # half a reply is buffered; wait for the rest
            replies.append(reply)
        return replies
