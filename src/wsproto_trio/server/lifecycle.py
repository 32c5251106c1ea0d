"""One server's life: run the hub, then stop once, within one deadline.

Rules:
- a stop starts once, on the first of: SIGTERM (or SIGINT) to this process,
  Hypercorn's shutdown event (plain ``hypercorn``), the hub crashing, or the
  app's lifespan shutdown; later requests join the stop already under way;
- the first request fixes the one deadline, ``SHUTDOWN_TIMEOUT`` from then;
- the stop is, in this order: refuse new websockets and close every open one
  with 1001 (1011 when the hub crashed) (``Hub.drain``); wait for their
  handlers to leave their rooms (``Hub.wait_no_connections``); remove this
  server and what is left of its members from presence, once
  (``Hub.deregister``). Each wait ends at the deadline;
- a server that owns its process (``Role.COMMAND``, ``Role.HYPERCORN``) has
  exited by the deadline: past it the process exits with status 1, whatever is
  still running (a connection's shielded presence clean-up waiting on a frozen
  Redis, Hypercorn's grace time). A crashed hub exits with status 1 too.

Why the process watching is here and not left to Hypercorn: under plain
``hypercorn --worker-class trio`` the worker process never sees the signal.
Hypercorn's parent (``hypercorn/run.py``) catches SIGTERM and SIGINT, sets a
``multiprocessing`` event that every worker's ``trio_worker`` polls every
0.1 s (``hypercorn/utils.py: check_multiprocess_shutdown_event``), and once
set the worker stops accepting, waits ``--graceful-timeout`` for connections
and only then runs the app's lifespan shutdown: websockets are cancelled
without a close frame (1006) before the app hears of it. So the app watches the
same event itself (``hypercorn_shutdown_event``) and drains at once.

It listens for SIGTERM in the worker as well: when one of several workers
exits, Hypercorn's parent SIGTERMs the others (``process.terminate()``) while
they may still be deregistering, and a supervisor that signals the whole
process group (systemd's default ``KillMode=control-group``) does the same.
Without a handler that SIGTERM would kill the worker mid-drain. Under
Hypercorn a later SIGTERM is therefore not "exit now"; under
``wsproto-trio serve`` and ``hypercorn -w 0`` (one process, where Hypercorn's
trio worker installs no signal handler at all) a second signal exits at once.

Hypercorn's trio worker has no way for an app to stop it: it stops only on its
parent's event, a KeyboardInterrupt, or ``--max-requests``. When the stop did
not come from that event (a crashed hub, a SIGTERM to the worker alone,
``-w 0``), the process exits itself once the stop is done. Hypercorn's parent
restarts a worker that exited with 0 and stops the pool (exit status 1) when
one exits otherwise.
"""

from __future__ import annotations

import enum
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
from typing import NoReturn, Protocol

import trio

from .hub import Hub

log = logging.getLogger("wsproto_trio.lifecycle")

_EVENT_POLL = 0.1  # as often as Hypercorn itself looks at the event
_HTTP_GRACE = 0.5  # for HTTP requests in flight once every websocket is closed
CRASH_CLOSE_CODE = 1011


class Role(enum.Enum):
    """Who runs the app, which says who ends the process."""

    EMBEDDED = "embedded"
    """Inside another program's trio run (tests): no signals are watched; the
    host stops the app by shutting its Hypercorn down."""

    COMMAND = "command"
    """``wsproto-trio serve``: our own ``trio.run``; Hypercorn's
    ``shutdown_trigger`` is ``Lifecycle.hypercorn_shutdown_trigger``."""

    HYPERCORN = "hypercorn"
    """Loaded by the plain ``hypercorn`` command, in a worker or ``-w 0``."""


class _SharedEvent(Protocol):
    def is_set(self) -> bool: ...


def hypercorn_shutdown_event() -> _SharedEvent | None:
    """The event Hypercorn's parent sets to stop this worker process, or None.

    Hypercorn (0.18, ``hypercorn.run._populate``) starts each worker as
    ``Process(target=trio_worker, kwargs={"config": ..., "shutdown_event": ...,
    "sockets": ...})``; in the worker, ``multiprocessing.current_process()`` is
    that object. It is private API, so every step is checked: anything else
    (``-w 0``, a worker of some other program) gets None and relies on signals.
    """
    process = multiprocessing.current_process()
    target = getattr(process, "_target", None)
    if not getattr(target, "__module__", "").startswith("hypercorn."):
        return None
    kwargs = getattr(process, "_kwargs", None)
    event = kwargs.get("shutdown_event") if isinstance(kwargs, dict) else None
    if event is None or not callable(getattr(event, "is_set", None)):
        return None
    shared: _SharedEvent = event
    return shared


def exit_now(status: int, why: str) -> NoReturn:
    """End the process at once: logs flushed, no clean-up awaited.

    For the deadline and a second signal (shielded clean-up, such as a
    connection leaving presence on a frozen Redis, cannot be cancelled, so
    nothing short of this bounds the exit), and for a Hypercorn worker whose
    stop Hypercorn does not know about (it offers an app no way to stop it).
    """
    log.log(
        logging.WARNING if status else logging.INFO, "%s; exiting now with status %d", why, status
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class Lifecycle:
    """Runs the hub in the app's lifespan and owns the one way it stops."""

    def __init__(self, hub: Hub, shutdown_timeout: float, role: Role) -> None:
        self.hub = hub
        self.shutdown_timeout = shutdown_timeout
        self.role = role
        self.exit_status = 0
        self.reason: str | None = None  # why the stop began; None while serving
        self.deadline = math.inf
        self.drained = trio.Event()
        self._stop = trio.Event()
        self._scope = trio.CancelScope()
        self.crashed = False
        self._hypercorn_event = hypercorn_shutdown_event() if role is Role.HYPERCORN else None

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def remaining(self) -> float:
        return max(0.0, self.deadline - trio.current_time())

    def request_stop(self, reason: str, *, crashed: bool = False) -> None:
        """Begin the stop (once; a later crash only sets the exit status).

        ``crashed``: the server cannot go on (its hub died): clients get 1011
        instead of 1001, and the process exits with status 1.
        """
        if crashed:
            self.exit_status = 1
        if self.reason is not None:
            return
        self.reason = reason
        self.crashed = crashed
        self.deadline = trio.current_time() + self.shutdown_timeout
        self._stop.set()

    # -- the app's lifespan --------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``shutdown`` cancels it; ``started`` once the hub is up.

        Lives in Quart's lifespan nursery (started from ``before_serving``),
        which outlives the app's shutdown hook, hence a scope of our own.
        """
        with self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._serve_hub)
                if self.role is not Role.EMBEDDED:
                    await nursery.start(self._watch_signals)
                if self._hypercorn_event is not None:
                    nursery.start_soon(self._watch_hypercorn_event, self._hypercorn_event)
                task_status.started()
                await self._stop.wait()
                if self.role is not Role.EMBEDDED:
                    nursery.start_soon(self._enforce_deadline)
                await self._drain()
                self._end_process_if_nobody_will()

    async def shutdown(self) -> None:
        """The app's ``after_serving``: stop (if not yet), wait for it, stop the hub."""
        self.request_stop("server shutting down")
        with trio.move_on_at(self.deadline):
            await self.drained.wait()
        self._scope.cancel()

    async def hypercorn_shutdown_trigger(self, config: _GracefulConfig) -> None:
        """``shutdown_trigger`` for ``hypercorn.trio.serve`` under ``wsproto-trio serve``.

        Returns once the drain is done, then leaves Hypercorn half a second for
        plain HTTP requests in flight: every websocket is closed by then, and
        its ping task (``websocket_ping_interval``) would otherwise hold the
        stop for a whole ``HEARTBEAT_INTERVAL`` after its socket closed.
        """
        await self.drained.wait()
        config.graceful_timeout = min(_HTTP_GRACE, self.remaining())

    # -- the stop --------------------------------------------------------------

    async def _drain(self) -> None:
        code = CRASH_CLOSE_CODE if self.crashed else 1001
        log.info(
            "shutting down (%s): closing %d connections with %d",
            self.reason, self.hub.connection_count, code,
        )  # fmt: skip
        self.hub.drain(code)
        with trio.move_on_at(self.deadline) as waiting:
            await self.hub.wait_no_connections()
        if waiting.cancelled_caught:
            self.exit_status = max(self.exit_status, 1)
            log.warning("%d connections still closing at the deadline", self.hub.connection_count)
        with trio.move_on_at(self.deadline) as deregistering:
            await self.hub.deregister()
        if deregistering.cancelled_caught:
            self.exit_status = max(self.exit_status, 1)
        self.drained.set()
        log.info("drained in %.3fs", self.shutdown_timeout - self.remaining())

    def _end_process_if_nobody_will(self) -> None:
        # COMMAND: cli's shutdown trigger ends Hypercorn and returns the status.
        # HYPERCORN: Hypercorn is stopping only when its parent's event is set.
        if self.role is not Role.HYPERCORN:
            return
        if self.exit_status == 0 and self._hypercorn_is_stopping():
            return
        exit_now(self.exit_status, f"stopped ({self.reason})")

    def _hypercorn_is_stopping(self) -> bool:
        return self._hypercorn_event is not None and self._hypercorn_event.is_set()

    async def _enforce_deadline(self) -> None:
        await trio.sleep_until(self.deadline)
        exit_now(1, f"shutdown did not finish within SHUTDOWN_TIMEOUT={self.shutdown_timeout}s")

    # -- what starts the stop --------------------------------------------------

    async def _serve_hub(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The hub; if it ends by itself (it raised), the server stops, status 1.

        A hub that fails while starting fails ``before_serving`` instead: the
        server does not start.
        """
        up = False
        crash: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.hub.serve)
                up = True
                task_status.started()
        except* Exception as group:
            if not up:
                raise
            crash = group
        log.error("the hub stopped: stopping the server", exc_info=crash)
        reason = "the hub stopped" if crash is None else f"hub crashed: {_first(crash)!r}"
        self.request_stop(reason, crashed=True)

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM is not watched")
            task_status.started()
            return
        signals = [signal.SIGTERM]
        # Hypercorn's parent ignores SIGINT in its workers so that Ctrl-C
        # reaches only the parent; keep it that way.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signals.append(signal.SIGINT)
        with trio.open_signal_receiver(*signals) as received:
            task_status.started()
            async for signum in received:
                name = signal.Signals(signum).name
                if not self.stopping:
                    log.info("received %s", name)
                    self.request_stop(f"received {name}")
                elif self._hypercorn_event is None:
                    exit_now(1, f"second signal ({name})")
                else:
                    log.info("received %s while stopping: carrying on", name)

    async def _watch_hypercorn_event(self, event: _SharedEvent) -> None:
        # A multiprocessing event cannot wake trio; poll it, as Hypercorn does.
        while not event.is_set():  # noqa: ASYNC110
            await trio.sleep(_EVENT_POLL)
        self.request_stop("Hypercorn is shutting down")


class _GracefulConfig(Protocol):
    graceful_timeout: float


def _first(error: BaseException) -> BaseException:
    """The first leaf of an exception group, for a one-line reason."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
