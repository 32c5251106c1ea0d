"""``wsproto-trio token``: the token it prints passes this server's verifier."""

from __future__ import annotations

import argparse
import time

import jwt
import pytest
from tests.jwt_support import SECRET

from wsproto_trio.auth import token as token_command
from wsproto_trio.auth.verifier import Verifier
from wsproto_trio.config import AuthSettings
from wsproto_trio.core.claims import Patterns


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    token_command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["token", *argv])


def run(capsys: pytest.CaptureFixture[str], *argv: str, **env: str) -> tuple[int, str, str]:
    code = token_command.run(parse(*argv), {"AUTH_JWT_SECRET": SECRET, **env})
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


async def test_token_passes_the_verifier(capsys: pytest.CaptureFixture[str]) -> None:
    code, token, _ = run(
        capsys,
        "--sub", "alice", "--rooms", "team-*", "lobby", "--send", "team-*",
        "--no-chat", "--info", '{"name": "Alice"}', "--ttl", "1h",
    )  # fmt: skip
    assert code == 0
    claims = await Verifier(AuthSettings(secret=SECRET)).verify(token)
    assert claims.sub == "alice"
    assert claims.rooms == Patterns(["team-*", "lobby"])
    assert claims.send == Patterns(["team-*"])
    assert claims.chat is False
    assert claims.info == {"name": "Alice"}
    assert claims.exp is not None and abs(claims.exp - (time.time() + 3600)) < 60


def test_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, token, _ = run(capsys, "--sub", "bob")
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert code == 0
    assert set(payload) == {"sub", "iat", "exp"}
    assert payload["exp"] - payload["iat"] == 3600


def test_rooms_without_patterns_is_none_and_ttl_zero_has_no_exp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, token, _ = run(capsys, "--sub", "bob", "--rooms", "--ttl", "0")
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["rooms"] == [] and "exp" not in payload


def test_audience_and_issuer_default_from_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, token, _ = run(capsys, "--sub", "bob", AUTH_AUDIENCE="chat", AUTH_ISSUER="me")
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], audience="chat", issuer="me")
    assert payload["aud"] == "chat" and payload["iss"] == "me"


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("45", 45)]
)
def test_ttl(ttl: str, seconds: float) -> None:
    assert token_command.parse_ttl(ttl) == seconds


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--sub", ""], "no valid sub"),
        (["--sub", "a", "--info", "[1]"], "'info' must be a JSON object"),
        (["--sub", "a", "--info", "{nope"], "--info: not JSON"),
        (["--sub", "a", "--ttl", "soon"], "--ttl"),
        (["--sub", "a", "--alg", "HS512"], "too short for HS512"),
    ],
)
def test_errors(capsys: pytest.CaptureFixture[str], argv: list[str], problem: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert problem in err and "\n" not in err


def test_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert token_command.run(parse("--sub", "a"), {}) == 2
    assert "AUTH_JWT_SECRET is not set" in capsys.readouterr().err


def test_cli_subcommand(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsproto_trio import cli

    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["token", "--sub", "alice", "--rooms", "team-*", "--ttl", "1h"])
    assert exit_info.value.code == 0
    payload = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert payload["sub"] == "alice" and payload["rooms"] == ["team-*"]
