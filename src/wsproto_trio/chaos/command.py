"""``wsproto-trio chaos``: its command line, the run, the report and the last line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import trio

from .processes import ChaosSetupError
from .report import compute, draw_timeline, table, write_json
from .run import Options, run_chaos
from .schedule import FAULT_KINDS


def add_parser(commands: Any) -> None:
    """Add the ``chaos`` subcommand to ``wsproto-trio``'s subparsers."""
    parser = commands.add_parser(
        "chaos",
        help="run a cluster under faults and measure what is delivered",
        description=(
            "Start redis-server, N servers and M clients, publish, inject faults "
            "(client links cut, kill -9, a server's Redis link cut, a Redis restart) "
            "and report deliveries. Last line: "
            "'chaos: delivered X/Y (R%%), duplicates D, reordered O'."
        ),
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="publishing time (60)")
    parser.add_argument("--servers", type=int, default=2, help="server processes (2)")
    parser.add_argument("--clients", type=int, default=50, help="clients (50)")
    parser.add_argument("--rooms", type=int, default=5, help="rooms (5)")
    parser.add_argument(
        "--rooms-per-client", type=int, default=2, help="rooms each client joins (2)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="messages a second (20)")
    parser.add_argument(
        "--no-recovery", action="store_true", help="clients rejoin without recovering"
    )
    parser.add_argument("--presence-ttl", type=float, default=3.0, help="PRESENCE_TTL (3 s)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help="comma-separated subset of: " + ", ".join(FAULT_KINDS) + " (all; '' for none)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the publisher's choices")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--png", type=Path, help="draw the timeline here (needs matplotlib)")
    parser.add_argument("--workdir", type=Path, help="logs of Redis and the servers")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    kinds = {k.strip() for k in args.faults.split(",") if k.strip()}
    unknown = kinds - set(FAULT_KINDS)
    if unknown:
        print(f"chaos: unknown fault(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    options = Options(
        seconds=args.seconds,
        servers=args.servers,
        clients=args.clients,
        rooms=args.rooms,
        rooms_per_client=args.rooms_per_client,
        rate=args.rate,
        recover=not args.no_recovery,
        presence_ttl=args.presence_ttl,
        seed=args.seed,
        workdir=args.workdir,
        faults=frozenset(k for k in FAULT_KINDS if k in kinds),
    )
    try:
        records = trio.run(run_chaos, options)
    except ChaosSetupError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    report = compute(
        records,
        recovery=options.recover,
        seconds=options.seconds,
        servers=options.servers,
        clients=options.clients,
        rooms=options.rooms,
        rate=options.rate,
    )
    print(table(report))
    if args.json is not None:
        write_json(report, args.json)
        print(f"  report: {args.json}")
    if args.png is not None:
        if draw_timeline(records, report, args.png):
            print(f"  timeline: {args.png}")
        else:
            print("  timeline: not drawn (pip install 'wsproto-trio[chaos]' for matplotlib)")
    print(report.last_line(), flush=True)
    return 0
