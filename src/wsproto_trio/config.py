"""Settings, read once from the environment and validated up front.

An invalid value stops start-up with a one-line error naming the variable
(``ConfigError``), rather than surfacing later as a confusing runtime fault.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

from .auth.keys import load_public_key_file
from .errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m)\s*$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _default_server_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``rate`` messages a second on average, ``burst`` at once."""

    rate: float
    burst: float

    @property
    def enabled(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Authentication with JWTs (PROTOCOL.md section 8): exactly one key source.

    ``public_key`` holds the PEM text read from ``AUTH_JWT_PUBLIC_KEY`` at
    start-up (``public_key_path`` names the file). Neither the secret nor a key
    is in ``repr``, so logging the settings cannot leak them.
    """

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    public_key_path: str | None = None
    jwks_url: str | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 5.0
    anonymous: bool = False
    refresh_notice: float = 30.0

    def __post_init__(self) -> None:
        sources = [s for s in (self.secret, self.public_key, self.jwks_url) if s is not None]
        if len(sources) != 1:
            raise ValueError("AuthSettings needs exactly one of secret, public_key, jwks_url")


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 9000
    server_id: str = field(default_factory=_default_server_id)
    max_message_bytes: int = 65536
    send_queue_size: int = 1024
    send_queue_bytes: int = 4 * 1024 * 1024
    rate_limit: RateLimit = RateLimit(rate=100.0, burst=200.0)
    presence_ttl: float = 15.0
    admin_token: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    max_connections: int = 0
    allowed_origins: tuple[str, ...] = ()
    shutdown_timeout: float = 5.0
    heartbeat_interval: float = 10.0
    handshake_timeout: float = 10.0
    history_size: int = 100
    history_ttl: float = 300.0
    redis_cluster_nodes: tuple[tuple[str, int], ...] = ()
    auth: AuthSettings | None = None  # None: no authentication

    def with_changes(self, **changes: object) -> Settings:
        """A copy with some fields replaced; tests build their servers this way."""
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass kwargs


def parse_duration(variable: str, text: str) -> float:
    """Seconds from ``15``, ``15s``, ``500ms`` or ``2m``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(variable, f"expected a duration like 15s or 500ms, got {text!r}")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    seconds = value / 1000 if unit == "ms" else value * 60 if unit == "m" else value
    if seconds <= 0:
        raise ConfigError(variable, "must be greater than zero")
    if not seconds < 10**9:
        raise ConfigError(variable, f"{text!r} is too long a duration")
    return seconds


def parse_rate_limit(variable: str, text: str, burst_text: str | None) -> RateLimit:
    """``100/s`` (burst twice the rate unless RATE_BURST says), or ``off``."""
    if text.strip().lower() in ("off", "0", "none"):
        return RateLimit(rate=0.0, burst=0.0)
    match = _RATE.match(text)
    if match is None:
        raise ConfigError(variable, f"expected a rate like 100/s or 600/m, or off; got {text!r}")
    rate = float(match.group(1)) / (60.0 if match.group(2) == "m" else 1.0)
    if not rate < 10**9:
        raise ConfigError(variable, f"{text!r} is too high a rate")
    if rate <= 0:
        raise ConfigError(variable, "must be greater than zero (or 'off')")
    burst = 2 * rate
    if burst_text is not None:
        burst = float(_parse_int("RATE_BURST", burst_text, minimum=1, maximum=10**9))
    return RateLimit(rate=rate, burst=max(burst, 1.0))


def _parse_int(variable: str, text: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(variable, f"expected a whole number, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(variable, f"must be {bound}, got {value}")
    return value


def _parse_redis_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL", f"expected redis://host:port/db, got {text!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError("REDIS_URL", f"no host in {text!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError("REDIS_URL", f"bad port in {text!r}") from None
    return text


def _parse_cluster_nodes(text: str) -> tuple[tuple[str, int], ...]:
    nodes: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ConfigError(
                "REDIS_CLUSTER_NODES", f"expected host:port[,host:port...], got {text!r}"
            )
        nodes.append((host, _parse_int("REDIS_CLUSTER_NODES", port, minimum=1, maximum=65535)))
    if not nodes:
        raise ConfigError("REDIS_CLUSTER_NODES", "names no node")
    return tuple(nodes)


def _parse_server_id(text: str) -> str:
    if not 1 <= len(text) <= 100 or any(c.isspace() or not c.isprintable() for c in text):
        raise ConfigError("SERVER_ID", "must be 1 to 100 printable characters without spaces")
    return text


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables; unset ones keep their defaults."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None or value.strip() == "" else value

    changes: dict[str, object] = {}
    if (value := get("REDIS_URL")) is not None:
        changes["redis_url"] = _parse_redis_url(value.strip())
    if (value := get("HOST")) is not None:
        changes["host"] = value.strip()
    if (value := get("PORT")) is not None:
        changes["port"] = _parse_int("PORT", value, minimum=0, maximum=65535)
    if (value := get("SERVER_ID")) is not None:
        changes["server_id"] = _parse_server_id(value.strip())
    if (value := get("MAX_MESSAGE_BYTES")) is not None:
        changes["max_message_bytes"] = _parse_int("MAX_MESSAGE_BYTES", value, minimum=64)
    if (value := get("SEND_QUEUE_SIZE")) is not None:
        changes["send_queue_size"] = _parse_int("SEND_QUEUE_SIZE", value, minimum=1)
    if (value := get("SEND_QUEUE_BYTES")) is not None:
        changes["send_queue_bytes"] = _parse_int("SEND_QUEUE_BYTES", value, minimum=1024)
    burst = get("RATE_BURST")
    if (value := get("RATE_LIMIT")) is not None or burst is not None:
        changes["rate_limit"] = parse_rate_limit("RATE_LIMIT", value or "100/s", burst)
    if (value := get("PRESENCE_TTL")) is not None:
        changes["presence_ttl"] = parse_duration("PRESENCE_TTL", value)
    if (value := get("ADMIN_TOKEN")) is not None:
        changes["admin_token"] = value.strip()
    if (value := get("LOG_LEVEL")) is not None:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", f"expected one of {', '.join(_LOG_LEVELS)}")
        changes["log_level"] = level
    if (value := get("LOG_FORMAT")) is not None:
        fmt = value.strip().lower()
        if fmt not in ("text", "json"):
            raise ConfigError("LOG_FORMAT", "expected text or json")
        changes["log_format"] = fmt
    if (value := get("MAX_CONNECTIONS")) is not None:
        changes["max_connections"] = _parse_int("MAX_CONNECTIONS", value, minimum=0)
    if (value := get("ALLOWED_ORIGINS")) is not None:
        changes["allowed_origins"] = tuple(o.strip() for o in value.split(",") if o.strip())
    if (value := get("SHUTDOWN_TIMEOUT")) is not None:
        changes["shutdown_timeout"] = parse_duration("SHUTDOWN_TIMEOUT", value)
    if (value := get("HEARTBEAT_INTERVAL")) is not None:
        changes["heartbeat_interval"] = parse_duration("HEARTBEAT_INTERVAL", value)
    if (value := get("HANDSHAKE_TIMEOUT")) is not None:
        changes["handshake_timeout"] = parse_duration("HANDSHAKE_TIMEOUT", value)
    if (value := get("HISTORY_SIZE")) is not None:
        changes["history_size"] = _parse_int("HISTORY_SIZE", value, minimum=0, maximum=100_000)
    if (value := get("HISTORY_TTL")) is not None:
        changes["history_ttl"] = parse_duration("HISTORY_TTL", value)
    if (value := get("REDIS_CLUSTER_NODES")) is not None:
        if "redis_url" in changes:
            raise ConfigError(
                "REDIS_CLUSTER_NODES", "set either REDIS_URL or REDIS_CLUSTER_NODES, not both"
            )
        changes["redis_cluster_nodes"] = _parse_cluster_nodes(value)
    changes["auth"] = auth_from_env(get, env.keys())
    return Settings().with_changes(**changes)


AUTH_KEY_VARIABLES = ("AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY", "AUTH_JWKS_URL")
AUTH_OTHER_VARIABLES = (
    "AUTH_AUDIENCE",
    "AUTH_ISSUER",
    "AUTH_LEEWAY",
    "AUTH_ANONYMOUS",
    "AUTH_REFRESH_NOTICE",
)
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as its hash
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def auth_from_env(get: Callable[[str], str | None], names: Iterable[str]) -> AuthSettings | None:
    """``AUTH_*`` settings; ``None`` (no authentication) when none is set.

    One key variable turns authentication on. Any other ``AUTH_*`` variable
    without one, two key variables, or an ``AUTH_*`` name we do not know (a
    typo would otherwise leave a check silently off) is invalid.
    """
    known = AUTH_KEY_VARIABLES + AUTH_OTHER_VARIABLES
    for name in sorted(names):
        if name.startswith("AUTH_") and name not in known and get(name) is not None:
            raise ConfigError(name, f"unknown variable (known: {', '.join(known)})")
    keys = [name for name in AUTH_KEY_VARIABLES if get(name) is not None]
    if not keys:
        for name in AUTH_OTHER_VARIABLES:
            if get(name) is not None:
                raise ConfigError(
                    name, "needs AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY or AUTH_JWKS_URL as well"
                )
        return None
    if len(keys) > 1:
        raise ConfigError(keys[1], f"set only one of {', '.join(AUTH_KEY_VARIABLES)}")
    changes: dict[str, object] = {}
    if (value := get("AUTH_JWT_SECRET")) is not None:
        if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ConfigError(
                "AUTH_JWT_SECRET",
                f"must be at least {MIN_SECRET_BYTES} bytes (make one: openssl rand -hex 32)",
            )
        changes["secret"] = value
    if (value := get("AUTH_JWT_PUBLIC_KEY")) is not None:
        changes["public_key_path"] = value.strip()
        changes["public_key"] = load_public_key_file("AUTH_JWT_PUBLIC_KEY", value.strip())
    if (value := get("AUTH_JWKS_URL")) is not None:
        changes["jwks_url"] = _parse_jwks_url(value.strip())
    if (value := get("AUTH_AUDIENCE")) is not None:
        changes["audience"] = value.strip()
    if (value := get("AUTH_ISSUER")) is not None:
        changes["issuer"] = value.strip()
    if (value := get("AUTH_LEEWAY")) is not None:
        changes["leeway"] = _parse_leeway(value)
    if (value := get("AUTH_ANONYMOUS")) is not None:
        changes["anonymous"] = _parse_bool("AUTH_ANONYMOUS", value)
    if (value := get("AUTH_REFRESH_NOTICE")) is not None:
        changes["refresh_notice"] = parse_duration("AUTH_REFRESH_NOTICE", value)
    return AuthSettings(**changes)  # type: ignore[arg-type]  # dataclass kwargs


def _parse_jwks_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "file"):
        raise ConfigError(
            "AUTH_JWKS_URL", f"expected an http://, https:// or file:// URL, got {text!r}"
        )
    if parts.scheme != "file" and not parts.hostname:
        raise ConfigError("AUTH_JWKS_URL", f"no host in {text!r}")
    if parts.scheme == "file" and not parts.path:
        raise ConfigError("AUTH_JWKS_URL", f"no path in {text!r}")
    return text


def _parse_leeway(text: str) -> float:
    if text.strip() in ("0", "0s", "0ms"):
        return 0.0
    seconds = parse_duration("AUTH_LEEWAY", text)
    if seconds > 3600:
        raise ConfigError("AUTH_LEEWAY", "must be at most an hour")
    return seconds


def _parse_bool(variable: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(variable, f"expected true or false, got {text!r}")
