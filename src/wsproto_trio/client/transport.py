"""Opening one websocket with trio-websocket, failing fast and without exception groups.

trio-websocket's client waits for the handshake's answer until its connect
timeout even when the TCP connection closed first, which is what a load
balancer or proxy in front of a dead server does: it accepts and closes. A
client would then sit out the whole timeout before trying the next server.
Here the reader task that trio-websocket starts is watched (the nursery handed
to ``connect_websocket_url`` is a stand-in that notices the task ending): when
it ends before the handshake is done, the attempt fails at once. A refused
handshake (``ConnectionRejected``, raised in that task) is raised from here as
it is, not wrapped in the nursery's exception group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import trio
from trio_websocket import (
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)


class _ReaderWatch:
    """Stands in for a nursery: starts trio-websocket's reader task in the real one
    and records when it ends, and with which rejection."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.ended = trio.Event()
        self.rejection: ConnectionRejected | None = None

    def start_soon(
        self, function: Callable[..., Awaitable[object]], *args: Any, name: object = None
    ) -> None:
        async def reader() -> None:
            try:
                await function(*args)
            except ConnectionRejected as exc:
                self.rejection = exc
            finally:
                self.ended.set()

        self._nursery.start_soon(reader, name=name)


def raise_body_error(group: BaseExceptionGroup, body_error: BaseException | None) -> None:
    """Strict nurseries wrap the ``async with`` body's own exception: raise it
    unwrapped when nothing but it (and cancellations) is in ``group``."""
    if body_error is None:
        return
    rest = group.subgroup(
        lambda e: not isinstance(e, BaseExceptionGroup | trio.Cancelled) and e is not body_error
    )
    if rest is None:
        raise body_error from None


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    subprotocols: Sequence[str] | None,
    headers: list[tuple[bytes, bytes]] | None,
    connect_timeout: float,
    disconnect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to ``url``; raises ``HandshakeError`` (``ConnectionRejected``,
    ``ConnectionTimeout``) when no websocket came of it. On exit the websocket is
    closed (code 1000), waiting at most ``disconnect_timeout`` for the server."""
    failure: BaseException | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            watch = _ReaderWatch(nursery)
            ws: WebSocketConnection | None = None
            with trio.move_on_after(connect_timeout) as deadline:
                async with trio.open_nursery() as race:

                    async def handshake() -> None:
                        nonlocal ws, failure
                        try:
                            ws = await connect_websocket_url(
                                cast(trio.Nursery, watch),
                                url,
                                subprotocols=subprotocols,
                                extra_headers=headers,
                            )
                        except OSError as exc:
                            failure = HandshakeError(f"cannot connect: {exc}")
                        race.cancel_scope.cancel()

                    async def reader_ended() -> None:
                        await watch.ended.wait()
                        race.cancel_scope.cancel()

                    race.start_soon(handshake)
                    race.start_soon(reader_ended)
            if ws is None:
                if watch.rejection is not None:
                    failure = watch.rejection
                elif failure is None:
                    failure = (
                        ConnectionTimeout(f"no handshake within {connect_timeout:g} s")
                        if deadline.cancelled_caught
                        else HandshakeError("the connection closed during the handshake")
                    )
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield ws
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(disconnect_timeout):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_body_error(group, body_error)
        raise
    if failure is not None:
        raise failure
