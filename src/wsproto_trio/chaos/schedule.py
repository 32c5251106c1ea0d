"""When each fault of a chaos run happens: plain data, decided before the run.

The default schedule, for a run of T seconds (times from the start of publishing):
- every client connection is cut for 2 s every 10 s, from t = 5 s (as AnyCable's test);
- one server is killed with SIGKILL at 0.3 T (its clients move to the others) and
  started again under a new id 5 s later;
- one server's link to Redis is cut for 3 s at 0.55 T;
- Redis is restarted (all its data lost: every stream gets a new epoch) at 0.75 T.
No fault begins in the last 3 s, so the run ends on a settled cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CUT_EVERY = 10.0
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
    at = 5.0
    while at + CUT_FOR <= last_start:
        faults.append(Fault("cut_clients", at, CUT_FOR))
        at += CUT_EVERY
    if servers >= 2 and 0.3 * seconds <= last_start:
        faults.append(Fault("kill_server", 0.3 * seconds, RESTART_AFTER, server=0))
    if 0.55 * seconds + REDIS_LINK_CUT_FOR <= seconds:
        faults.append(
            Fault("cut_redis_link", 0.55 * seconds, REDIS_LINK_CUT_FOR, server=servers - 1)
        )
    if 0.75 * seconds <= last_start:
        faults.append(Fault("restart_redis", 0.75 * seconds, REDIS_DOWN_FOR))
    return sorted(faults, key=lambda f: f.at)
