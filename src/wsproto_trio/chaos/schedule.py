"""When each fault of a chaos run happens: plain data, decided before the run.

The default schedule, for a run of T seconds (times from the start of publishing):
- every client connection is cut for 2 s every 10 s, from t = 3 s (as AnyCable's test);
- the other faults go into the quiet stretches between cuts (1.5 s and 4.5 s
  after a cut ends), one at a time, so each one's effect can be told apart:
  one server's link to Redis cut for 3 s (from 0.25 T), then one server killed
  with SIGKILL (from 0.45 T; its clients move to the others; it is started
  again under a new id 5 s later), then Redis restarted with all its data lost
  (from 0.65 T; every stream gets a new epoch).
No fault begins in the last 3 s, so the run ends on a settled cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CUT_FIRST = 3.0
CUT_EVERY = 10.0
SLOTS_AFTER_CUT = (1.5, 4.5)  # seconds after a cut ends
CUT_FOR = 2.0
RESTART_AFTER = 5.0
REDIS_LINK_CUT_FOR = 3.0
REDIS_DOWN_FOR = 1.0
QUIET_END = 3.0

FaultKind = Literal["cut_clients", "kill_server", "cut_redis_link", "restart_redis"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "cut_clients",
    "kill_server",
    "cut_redis_link",
    "restart_redis",
)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    at: float  # seconds after the start of publishing
    duration: float  # how long the fault lasts (for a kill: until the restart)
    server: int = 0  # the server it hits (kill, Redis link)

    @property
    def label(self) -> str:
        match self.kind:
            case "cut_clients":
                return "client links cut"
            case "kill_server":
                return f"kill -9 s{self.server}"
            case "cut_redis_link":
                return f"s{self.server} Redis link cut"
            case "restart_redis":
                return "Redis restart"


def default_schedule(seconds: float, servers: int) -> list[Fault]:
    """The faults of a run of ``seconds`` with ``servers`` servers, in time order."""
    last_start = seconds - QUIET_END
    faults: list[Fault] = []
    slots: list[float] = []
    at = CUT_FIRST
    while at + CUT_FOR <= last_start:
        faults.append(Fault("cut_clients", at, CUT_FOR))
        slots += [at + CUT_FOR + after for after in SLOTS_AFTER_CUT]
        at += CUT_EVERY
    slots = [t for t in slots if t <= last_start]
    wanted: list[tuple[float, Fault]] = [
        (0.25, Fault("cut_redis_link", 0, REDIS_LINK_CUT_FOR, server=servers - 1)),
    ]
    if servers >= 2:
        wanted.append((0.45, Fault("kill_server", 0, RESTART_AFTER, server=0)))
    wanted.append((0.65, Fault("restart_redis", 0, REDIS_DOWN_FOR)))
    previous = -1.0
    for fraction, fault in wanted:
        free = [t for t in slots if t >= fraction * seconds and t > previous]
        if not free:
            free = [t for t in slots if t > previous]
        if free:
            previous = free[0]
            faults.append(Fault(fault.kind, previous, fault.duration, fault.server))
    return sorted(faults, key=lambda f: f.at)
