"""Profile one server of a target under load with py-spy, and say where its CPU goes.

    .venv/bin/python bench/profile.py --target ours-batched --scenario broadcast \\
        --clients 100 --rooms 100 --duration 20 --seconds 10 --out bench/results

Starts the bench's Redis, the target's two servers and the load generator as
``bench/run.py`` does (closed loop), waits a few seconds into the load, then runs
``py-spy record --format raw`` on server ``a`` for ``--seconds``. Prints the run's
figures and two views of the samples:

* self time grouped by the package of the innermost frame (standard-library frames
  are charged to the nearest caller from a known package, so ``socket.send`` counts
  as whoever called it; trio's ``_nonblocking_helper``/``send_all`` stands for the
  socket syscall, kernel time included);
* inclusive share of the frames whose names match ``--focus`` (our hot paths).

The raw stacks go to ``<out>/profile-<target>-<scenario>-<stamp>.txt`` (flamegraph
input). py-spy slows the profiled server, so read shares, not absolute figures.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import procs  # noqa: E402
from bench.scenarios import DEFAULT_INFLIGHT, Options, Probe, _phase, _setup, fanout  # noqa: E402

# (group, substrings of a frame's "function (file)" text); first match wins.
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("socket syscalls (send/recv)", ("_nonblocking_helper", "send_all (trio", "receive_some")),
    ("epoll", ("get_events (trio", "epoll")),
    ("logging", ("logging/",)),
    ("prometheus_client", ("prometheus_client",)),
    ("wsproto_trio", ("wsproto_trio/",)),
    ("hypercorn", ("hypercorn/",)),
    ("wsproto (framing)", ("wsproto/",)),
    ("h11", ("h11/",)),
    ("redis-py (incl. hiredis, pipeline thread)", ("redis/", "hiredis")),
    ("quart / werkzeug", ("quart", "werkzeug")),
    ("trio scheduler loop", ("unrolled_run", "run (trio/_core/_run")),
    ("trio (cancel scopes, locks, checkpoints, channels)", ("trio/",)),
    ("json", ("json/",)),
]
STDLIB_HINT = "/lib/python3"
DEFAULT_FOCUS = (
    "_write (wsproto_trio",
    "_read (wsproto_trio",
    "_handle (wsproto_trio",
    "deliver (wsproto_trio",
    "publish_message (wsproto_trio",
    "emit (logging",
    "app_send (hypercorn",
    "protocol_send (hypercorn",
    "_execute (wsproto_trio",
    "drain (wsproto_trio",
    "decode (wsproto_trio",
    "inc (prometheus_client",
    "labels (prometheus_client",
)


def group_of(frame: str) -> str | None:
    for name, needles in GROUPS:
        if any(n in frame for n in needles):
            return name
    return None


def summarize(raw: Path, focus: tuple[str, ...]) -> str:
    """Self time by group and inclusive time of the focus frames, as text."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        chosen = "other"
        for frame in reversed(frames):  # innermost first
            g = group_of(frame)
            if g is not None and not (STDLIB_HINT in frame and g == "other"):
                chosen = g
                break
        self_time[chosen] += count
        seen = {f for f in focus for frame in frames if f in frame}
        for f in seen:
            inclusive[f] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self time by group:"]
    for name, n in self_time.most_common():
        lines.append(f"  {n / total:6.1%}  {name}")
    lines += ["", "inclusive (a frame anywhere on the stack):"]
    for f in focus:
        lines.append(f"  {inclusive[f] / total:6.1%}  {f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="ours-batched", choices=sorted(procs.TARGETS))
    p.add_argument("--scenario", default="broadcast", choices=("broadcast", "rooms"))
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of py-spy recording")
    p.add_argument("--rate", type=float, default=200, help="py-spy samples per second")
    p.add_argument("--log-level", help="LOG_LEVEL of our servers (default: theirs)")
    p.add_argument("--focus", default=",".join(DEFAULT_FOCUS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if args.log_level:
        procs.OURS_ENV["LOG_LEVEL"] = args.log_level
    out: Path = args.out if args.out.is_absolute() else Path.cwd() / args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = out / f"profile-{args.target}-{args.scenario}-{stamp}.txt"
    opt = Options(clients=args.clients, rooms=args.rooms, duration=args.duration, out=out)
    target = procs.TARGETS[args.target]
    redis = procs.Redis.start(out / "logs")
    try:
        tag = f"profile-{args.scenario}-{args.target}"
        servers, lg, specs, info = _setup(target, args.scenario, redis, opt, tag, seed=0)
        try:
            probe = Probe(servers, redis, lg)
            spy_cmd = [
                str(procs.VENV_BIN / "py-spy"), "record", "--nonblocking", "--format", "raw",
                "-r", str(args.rate), "-d", str(int(args.seconds)), "-o", str(raw),
                "--pid", str(servers[0].proc.pid),
            ]  # fmt: skip

            def spy() -> None:
                time.sleep(min(3.0, args.duration / 4) + 0.5)
                subprocess.run(spy_cmd, check=False, capture_output=True)

            thread = threading.Thread(target=spy)
            thread.start()
            m = _phase(
                lg,
                specs,
                args.scenario,
                0,
                args.duration,
                None,
                DEFAULT_INFLIGHT[args.scenario],
                fanout(args.scenario, info["connected"]),
                probe,
                opt.drain_timeout,
            )
            thread.join()
        finally:
            lg.close()
            procs.stop_servers(servers)
    finally:
        redis.stop()
    print(
        f"{args.target} {args.scenario}: {m['deliveries_per_s']:,.0f} deliv/s, "
        f"{m['server_cpu_us_per_delivery'] or 0:.1f} us/deliv (both servers, py-spy on one), "
        f"{m['envelopes_per_frame'] or 0:.2f} env/frame, lost {m['lost']}, "
        f"{m['sent'] / args.duration:,.0f} msgs/s in"
    )
    print(f"raw stacks: {raw}")
    print(summarize(raw, tuple(f for f in args.focus.split(",") if f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
