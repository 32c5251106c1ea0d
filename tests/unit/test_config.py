"""config: settings from the environment, validated up front."""

from __future__ import annotations

import pytest

from wsproto_trio.config import RateLimit, Settings, from_env, parse_duration, parse_rate_limit
from wsproto_trio.errors import ConfigError

VARIABLES = [
    "REDIS_URL",
    "HOST",
    "PORT",
    "SERVER_ID",
    "MAX_MESSAGE_BYTES",
    "SEND_QUEUE_SIZE",
    "SEND_QUEUE_BYTES",
    "RATE_LIMIT",
    "RATE_BURST",
    "PRESENCE_TTL",
    "ADMIN_TOKEN",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "MAX_CONNECTIONS",
    "ALLOWED_ORIGINS",
    "SHUTDOWN_TIMEOUT",
    "HEARTBEAT_INTERVAL",
    "HANDSHAKE_TIMEOUT",
]
DURATION_VARIABLES = ["PRESENCE_TTL", "SHUTDOWN_TIMEOUT", "HEARTBEAT_INTERVAL", "HANDSHAKE_TIMEOUT"]
HUGE = "1" + "0" * 400  # overflows a float to inf


def without_server_id(settings: Settings) -> Settings:
    """Settings with the random part pinned, so two of them compare."""
    return settings.with_changes(server_id="pinned")


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_env(environ)
    return info.value


# Defaults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("redis_url", None),
        ("host", "0.0.0.0"),
        ("port", 9000),
        ("max_message_bytes", 65536),
        ("send_queue_size", 1024),
        ("send_queue_bytes", 4 * 1024 * 1024),
        ("rate_limit", RateLimit(rate=100.0, burst=200.0)),
        ("presence_ttl", 15.0),
        ("admin_token", None),
        ("log_level", "INFO"),
        ("log_format", "text"),
        ("max_connections", 0),
        ("allowed_origins", ()),
        ("shutdown_timeout", 5.0),
        ("heartbeat_interval", 10.0),
        ("handshake_timeout", 10.0),
    ],
)
def test_defaults(field: str, default: object) -> None:
    assert getattr(from_env({}), field) == default
    assert getattr(Settings(), field) == default


def test_default_rate_limit_is_enabled() -> None:
    assert from_env({}).rate_limit.enabled


def test_default_server_id_is_random_and_valid() -> None:
    first, second = from_env({}).server_id, from_env({}).server_id
    assert first != second
    assert first
    # The generated id passes the validation a configured one must pass.
    assert from_env({"SERVER_ID": first}).server_id == first


@pytest.mark.parametrize("variable", VARIABLES)
@pytest.mark.parametrize("blank", ["", " ", "\t\n"], ids=["empty", "space", "whitespace"])
def test_empty_value_means_unset(variable: str, blank: str) -> None:
    assert without_server_id(from_env({variable: blank})) == without_server_id(Settings())


def test_unrelated_variables_are_ignored() -> None:
    environ = {"PATH": "/bin", "HOME": "/root", "port": "1", "Port": "2"}
    assert without_server_id(from_env(environ)) == without_server_id(Settings())


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("SERVER_ID", "from-os-environ")
    settings = from_env()
    assert (settings.port, settings.server_id) == (9123, "from-os-environ")


# Every variable -------------------------------------------------------------------

PARSED = [
    ({"REDIS_URL": "redis://localhost:6379/0"}, "redis_url", "redis://localhost:6379/0"),
    ({"REDIS_URL": " redis://h:1/0 "}, "redis_url", "redis://h:1/0"),
    ({"REDIS_URL": "redis://localhost"}, "redis_url", "redis://localhost"),
    (
        {"REDIS_URL": "rediss://user:pw@cache.example:6380/2"},
        "redis_url",
        "rediss://user:pw@cache.example:6380/2",
    ),
    ({"REDIS_URL": "unix:///run/redis.sock"}, "redis_url", "unix:///run/redis.sock"),
    ({"HOST": "127.0.0.1"}, "host", "127.0.0.1"),
    ({"HOST": " :: "}, "host", "::"),
    ({"PORT": "8080"}, "port", 8080),
    ({"PORT": " 8080 "}, "port", 8080),
    ({"PORT": "0"}, "port", 0),
    ({"PORT": "65535"}, "port", 65535),
    ({"SERVER_ID": "server-a"}, "server_id", "server-a"),
    ({"SERVER_ID": "  server-a  "}, "server_id", "server-a"),
    ({"SERVER_ID": "s" * 100}, "server_id", "s" * 100),
    ({"SERVER_ID": "n\u0153ud-\u00e9t\u00e9"}, "server_id", "n\u0153ud-\u00e9t\u00e9"),
    ({"MAX_MESSAGE_BYTES": "64"}, "max_message_bytes", 64),
    ({"MAX_MESSAGE_BYTES": "1048576"}, "max_message_bytes", 1048576),
    ({"SEND_QUEUE_SIZE": "1"}, "send_queue_size", 1),
    ({"SEND_QUEUE_SIZE": "4096"}, "send_queue_size", 4096),
    ({"SEND_QUEUE_BYTES": "1024"}, "send_queue_bytes", 1024),
    ({"RATE_LIMIT": "100/s"}, "rate_limit", RateLimit(100.0, 200.0)),
    ({"RATE_LIMIT": "600/m"}, "rate_limit", RateLimit(10.0, 20.0)),
    ({"RATE_LIMIT": "5/s"}, "rate_limit", RateLimit(5.0, 10.0)),
    ({"RATE_LIMIT": " 100 / s "}, "rate_limit", RateLimit(100.0, 200.0)),
    ({"RATE_LIMIT": "2.5/s"}, "rate_limit", RateLimit(2.5, 5.0)),
    ({"RATE_LIMIT": "0.25/s"}, "rate_limit", RateLimit(0.25, 1.0)),  # burst at least 1
    ({"RATE_LIMIT": "1/m"}, "rate_limit", RateLimit(1 / 60, 1.0)),
    ({"RATE_LIMIT": "off"}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": "OFF"}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": " Off "}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": "none"}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": "0"}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": "off", "RATE_BURST": "50"}, "rate_limit", RateLimit(0.0, 0.0)),
    ({"RATE_LIMIT": "100/s", "RATE_BURST": "50"}, "rate_limit", RateLimit(100.0, 50.0)),
    ({"RATE_LIMIT": "600/m", "RATE_BURST": "1"}, "rate_limit", RateLimit(10.0, 1.0)),
    ({"RATE_BURST": "7"}, "rate_limit", RateLimit(100.0, 7.0)),
    ({"RATE_BURST": " 7 "}, "rate_limit", RateLimit(100.0, 7.0)),
    ({"PRESENCE_TTL": "15"}, "presence_ttl", 15.0),
    ({"PRESENCE_TTL": "15s"}, "presence_ttl", 15.0),
    ({"PRESENCE_TTL": "500ms"}, "presence_ttl", 0.5),
    ({"PRESENCE_TTL": "2m"}, "presence_ttl", 120.0),
    ({"PRESENCE_TTL": "1.5s"}, "presence_ttl", 1.5),
    ({"PRESENCE_TTL": "0.5"}, "presence_ttl", 0.5),
    ({"PRESENCE_TTL": " 30 s "}, "presence_ttl", 30.0),
    ({"ADMIN_TOKEN": "s3cret"}, "admin_token", "s3cret"),
    ({"ADMIN_TOKEN": " s3cret "}, "admin_token", "s3cret"),
    ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
    ({"LOG_LEVEL": "WARNING"}, "log_level", "WARNING"),
    ({"LOG_LEVEL": " error "}, "log_level", "ERROR"),
    ({"LOG_LEVEL": "Critical"}, "log_level", "CRITICAL"),
    ({"LOG_FORMAT": "json"}, "log_format", "json"),
    ({"LOG_FORMAT": " JSON "}, "log_format", "json"),
    ({"LOG_FORMAT": "text"}, "log_format", "text"),
    ({"MAX_CONNECTIONS": "0"}, "max_connections", 0),
    ({"MAX_CONNECTIONS": "500"}, "max_connections", 500),
    ({"ALLOWED_ORIGINS": "https://a.example"}, "allowed_origins", ("https://a.example",)),
    (
        {"ALLOWED_ORIGINS": "https://a.example, http://b.example:8080"},
        "allowed_origins",
        ("https://a.example", "http://b.example:8080"),
    ),
    ({"ALLOWED_ORIGINS": "a,,b, ,"}, "allowed_origins", ("a", "b")),
    ({"SHUTDOWN_TIMEOUT": "10"}, "shutdown_timeout", 10.0),
    ({"SHUTDOWN_TIMEOUT": "250ms"}, "shutdown_timeout", 0.25),
    ({"SHUTDOWN_TIMEOUT": "1m"}, "shutdown_timeout", 60.0),
    ({"HEARTBEAT_INTERVAL": "5s"}, "heartbeat_interval", 5.0),
    ({"HANDSHAKE_TIMEOUT": "2"}, "handshake_timeout", 2.0),
]


@pytest.mark.parametrize(
    ("environ", "field", "expected"),
    [pytest.param(*case, id="-".join(f"{k}={v}" for k, v in case[0].items())) for case in PARSED],
)
def test_variable_parsed(environ: dict[str, str], field: str, expected: object) -> None:
    settings = from_env(environ)
    assert getattr(settings, field) == expected
    # Nothing else moved.
    assert without_server_id(settings) == without_server_id(
        Settings().with_changes(**{field: expected})
    )


def test_all_variables_at_once() -> None:
    settings = from_env(
        {
            "REDIS_URL": "redis://r:6379/1",
            "HOST": "127.0.0.1",
            "PORT": "9001",
            "SERVER_ID": "s1",
            "MAX_MESSAGE_BYTES": "1000",
            "SEND_QUEUE_SIZE": "10",
            "SEND_QUEUE_BYTES": "2048",
            "RATE_LIMIT": "600/m",
            "RATE_BURST": "30",
            "PRESENCE_TTL": "3s",
            "ADMIN_TOKEN": "tok",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "json",
            "MAX_CONNECTIONS": "7",
            "ALLOWED_ORIGINS": "http://x",
            "SHUTDOWN_TIMEOUT": "2",
            "HEARTBEAT_INTERVAL": "500ms",
            "HANDSHAKE_TIMEOUT": "1m",
        }
    )
    assert settings == Settings(
        redis_url="redis://r:6379/1",
        host="127.0.0.1",
        port=9001,
        server_id="s1",
        max_message_bytes=1000,
        send_queue_size=10,
        send_queue_bytes=2048,
        rate_limit=RateLimit(10.0, 30.0),
        presence_ttl=3.0,
        admin_token="tok",
        log_level="DEBUG",
        log_format="json",
        max_connections=7,
        allowed_origins=("http://x",),
        shutdown_timeout=2.0,
        heartbeat_interval=0.5,
        handshake_timeout=60.0,
    )


# Invalid values -------------------------------------------------------------------

INVALID = [
    ("PORT", ["abc", "-1", "65536", "80.5", "1e3", "0x50", "80 80", "eighty"]),
    (
        "REDIS_URL",
        [
            "localhost:6379",
            "http://localhost:6379",
            "tcp://h:1",
            "redis://",
            "redis://:6379",
            "redis://host:port",
            "redis://host:99999",
            "just words",
        ],
    ),
    ("SERVER_ID", ["has space", "tab\there", "s" * 101, "nul\x00", "bell\x07", "line\nbreak"]),
    ("MAX_MESSAGE_BYTES", ["63", "0", "-1", "big", "64KB", "6.4e4"]),
    ("SEND_QUEUE_SIZE", ["0", "-5", "x", "1.5"]),
    ("SEND_QUEUE_BYTES", ["1023", "0", "1MiB"]),
    (
        "RATE_LIMIT",
        [
            "100",
            "100/h",
            "100/S",
            "/s",
            "fast",
            "-1/s",
            "0/s",
            "0/m",
            "1e3/s",
            "100/s/s",
            "on",
            "100 per s",
        ],
    ),
    (
        "PRESENCE_TTL",
        [
            "0",
            "0s",
            "0ms",
            "0.0m",
            "-1",
            "fast",
            "15h",
            "1e3",
            "15 seconds",
            "s",
            "15ss",
            ".5",
            "5.",
            "15S",
        ],
    ),
    ("LOG_LEVEL", ["verbose", "TRACE", "warn", "10", "INFO,DEBUG"]),
    ("LOG_FORMAT", ["xml", "yaml", "jsonl", "text,json"]),
    ("MAX_CONNECTIONS", ["-1", "many", "1.0"]),
    ("SHUTDOWN_TIMEOUT", ["0", "-5", "never", "5h"]),
    ("HEARTBEAT_INTERVAL", ["0", "soon"]),
    ("HANDSHAKE_TIMEOUT", ["0ms", "abc"]),
]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param(variable, value, id=f"{variable}={value[:20]!r}")
        for variable, values in INVALID
        for value in values
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    exc = config_error({variable: value})
    assert exc.variable == variable
    assert str(exc).startswith(f"{variable}: ")
    assert "\n" not in str(exc)  # a one-line error


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "lots", "9" * 5000])
@pytest.mark.parametrize("rate", [None, "100/s", "600/m"])
def test_invalid_rate_burst_names_rate_burst(rate: str | None, value: str) -> None:
    environ = {"RATE_BURST": value}
    if rate is not None:
        environ["RATE_LIMIT"] = rate
    exc = config_error(environ)
    assert exc.variable == "RATE_BURST"
    assert str(exc).startswith("RATE_BURST: ")


def test_huge_rate_burst_is_a_config_error() -> None:
    assert config_error({"RATE_BURST": "9" * 400}).variable == "RATE_BURST"


@pytest.mark.parametrize("variable", DURATION_VARIABLES)
def test_overflowing_duration_is_a_config_error(variable: str) -> None:
    assert config_error({variable: HUGE}).variable == variable


def test_first_invalid_variable_is_reported_even_with_valid_ones() -> None:
    exc = config_error({"PORT": "8080", "LOG_LEVEL": "loud", "SERVER_ID": "ok"})
    assert exc.variable == "LOG_LEVEL"


# The parsers directly -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15", 15.0), ("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1ms", 0.001), ("0.5m", 30.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration("X", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "-1", "1h", "abc"])
def test_parse_duration_error_names_the_given_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^MY_VAR: "):
        parse_duration("MY_VAR", text)


@pytest.mark.parametrize(
    ("text", "burst", "expected"),
    [
        ("100/s", None, RateLimit(100.0, 200.0)),
        ("600/m", None, RateLimit(10.0, 20.0)),
        ("100/s", "5", RateLimit(100.0, 5.0)),
        ("off", "5", RateLimit(0.0, 0.0)),
    ],
)
def test_parse_rate_limit(text: str, burst: str | None, expected: RateLimit) -> None:
    assert parse_rate_limit("RATE_LIMIT", text, burst) == expected


@pytest.mark.parametrize(("rate", "enabled"), [(0.0, False), (0.001, True), (100.0, True)])
def test_rate_limit_enabled(rate: float, enabled: bool) -> None:
    assert RateLimit(rate=rate, burst=1.0).enabled is enabled
