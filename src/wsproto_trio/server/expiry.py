"""A connection's token expiry on trio's clock: the ``Expiring`` notice, then the 4001 close.

Rules (``core.claims.deadlines``):
- ``set(exp)`` (at the handshake and at each successful ``Refresh``) turns the
  token's wall-clock ``exp`` into two deadlines on trio's clock, once: later
  steps of the wall clock do not move them;
- the notice goes out once per token, ``notice`` seconds before ``exp`` or at
  once when less is left; the close comes at ``exp`` itself;
- a new ``set`` replaces both deadlines, and re-arms the notice; ``None``
  (a token without ``exp``) disarms them.

The connection runs ``serve`` in its own nursery; the callbacks never block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import trio

from ..core.claims import deadlines


class _Plan(NamedTuple):
    exp: float
    notice_at: float  # trio time
    close_at: float  # trio time


class ExpiryTimer:
    def __init__(
        self,
        notice: float,
        on_notice: Callable[[float], None],
        on_expire: Callable[[], None],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._notice = notice
        self._on_notice = on_notice
        self._on_expire = on_expire
        self._wall_clock = wall_clock
        self._plan: _Plan | None = None
        self._noticed = False
        self._wake = trio.Event()

    def set(self, exp: float | None) -> None:
        """Arm the timer for a token expiring at ``exp`` (seconds since the epoch)."""
        due = deadlines(exp, self._wall_clock(), self._notice)
        if exp is None or due is None:
            self._plan = None
        else:
            now = trio.current_time()
            self._plan = _Plan(exp, now + due.notice, now + due.close)
        self._noticed = False
        self._wake.set()

    async def serve(self) -> None:
        """Run until the token expires (``on_expire`` has been called) or until cancelled."""
        while True:
            wake = self._wake = trio.Event()
            plan = self._plan
            if plan is None:
                await wake.wait()
                continue
            if not self._noticed:
                with trio.move_on_at(plan.notice_at):
                    await wake.wait()
                if wake.is_set():
                    continue
                self._noticed = True
                self._on_notice(plan.exp)
            with trio.move_on_at(plan.close_at):
                await wake.wait()
            if wake.is_set():
                continue
            self._on_expire()
            return
