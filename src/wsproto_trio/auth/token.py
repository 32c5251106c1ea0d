"""``wsproto-trio token``: print a token signed with ``AUTH_JWT_SECRET``.

For development and tests (as Centrifugo's ``gentoken``): a real deployment's
tokens come from its application backend. The secret is read from the
environment only, never from a flag (flags show in ``ps``). ``aud`` and ``iss``
default to ``AUTH_AUDIENCE`` and ``AUTH_ISSUER`` so the token passes this
server's checks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

import jwt

from ..core.claims import from_payload
from ..errors import TokenRejected
from .keys import hmac_key

_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(commands: Any) -> None:
    """Add ``token`` to the CLI's subcommands (``argparse`` subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "token",
        help="print a token signed with AUTH_JWT_SECRET (development and tests)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--sub", required=True, help="the subject (user name)")
    parser.add_argument(
        "--rooms",
        nargs="*",
        metavar="PATTERN",
        help="room patterns the user may join ('*' is a wildcard); absent: every room; "
        "--rooms with no pattern: none",
    )
    parser.add_argument(
        "--send",
        nargs="*",
        metavar="PATTERN",
        help="room patterns the user may send to; absent: the same as --rooms",
    )
    parser.add_argument("--no-chat", action="store_true", help="the user may not SubmitMessage")
    parser.add_argument("--info", metavar="JSON", help="a JSON object shown to other members")
    parser.add_argument(
        "--ttl", default="1h", help="lifetime: 90s, 30m, 1h, 7d; 0 for no exp (default 1h)"
    )
    parser.add_argument("--aud", help="audience (default AUTH_AUDIENCE)")
    parser.add_argument("--iss", help="issuer (default AUTH_ISSUER)")
    parser.add_argument(
        "--alg", default="HS256", choices=["HS256", "HS384", "HS512"], help="default HS256"
    )


def parse_ttl(text: str) -> float:
    match = _TTL.match(text)
    if match is None:
        raise ValueError(f"--ttl: expected a duration like 90s, 30m, 1h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def payload_from(args: argparse.Namespace, now: float) -> dict[str, Any]:
    """The claims for ``args``, checked by the same rules the server applies."""
    payload: dict[str, Any] = {"sub": args.sub, "iat": int(now)}
    ttl = parse_ttl(args.ttl)
    if ttl > 0:
        payload["exp"] = int(now + ttl)
    if args.rooms is not None:
        payload["rooms"] = list(args.rooms)
    if args.send is not None:
        payload["send"] = list(args.send)
    if args.no_chat:
        payload["chat"] = False
    if args.info is not None:
        try:
            payload["info"] = json.loads(args.info)
        except ValueError:
            raise ValueError("--info: not JSON") from None
    for claim, value in (("aud", args.aud), ("iss", args.iss)):
        if value:
            payload[claim] = value
    try:
        from_payload(payload)
    except TokenRejected as exc:
        raise ValueError(exc.reason) from None
    return payload


def run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Print the token; 2 with a one-line error when it cannot be made."""
    env = os.environ if environ is None else environ
    secret = env.get("AUTH_JWT_SECRET", "")
    if not secret.strip():
        print("wsproto-trio token: AUTH_JWT_SECRET is not set", file=sys.stderr)
        return 2
    args.aud = args.aud if args.aud is not None else env.get("AUTH_AUDIENCE") or None
    args.iss = args.iss if args.iss is not None else env.get("AUTH_ISSUER") or None
    try:
        key = hmac_key(secret)
        if args.alg not in key.algorithms:
            raise ValueError(f"AUTH_JWT_SECRET is too short for {args.alg}")
        payload = payload_from(args, time.time())
    except ValueError as exc:
        print(f"wsproto-trio token: {exc}", file=sys.stderr)
        return 2
    print(jwt.encode(payload, secret.encode("utf-8"), algorithm=args.alg))
    return 0
