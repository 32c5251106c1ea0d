"""A TCP proxy on trio that can cut its connections: the network fault of the chaos run.

``cut()`` closes every connection through it at once and refuses new ones
(accepted, then closed at once, so a client sees the failure immediately
instead of waiting out a timeout) until ``restore()``. Used in front of each
server (the clients' links) and between a server and Redis (its Redis link).
"""

from __future__ import annotations

from functools import partial

import trio

CHUNK = 65536


class Proxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.is_cut = False
        self.accepted = 0
        self._scopes: set[trio.CancelScope] = set()

    @property
    def connections(self) -> int:
        return len(self._scopes)

    def cut(self) -> None:
        """Close every connection now and refuse new ones until ``restore``."""
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.is_cut = False

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port of 127.0.0.1 (``started`` with it) until cancelled."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(self.port)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.is_cut:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    try:
                        with trio.fail_after(5):
                            upstream = await trio.open_tcp_stream(
                                self.upstream_host, self.upstream_port
                            )
                    except (OSError, trio.TooSlowError):
                        return  # upstream down: the client sees its connection close
                    self.accepted += 1
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pipe, upstream, client, nursery.cancel_scope)
                finally:
                    self._scopes.discard(scope)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        """Copy one direction; when either side ends, the whole connection ends."""
        try:
            while chunk := await source.receive_some(CHUNK):
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
