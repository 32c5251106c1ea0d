"""config: the AUTH_* settings, validated up front with a one-line error naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.jwt_support import SECRET, ec_key, private_pem, public_pem, rsa_key

from wsproto_trio.config import AuthSettings, Settings, from_env
from wsproto_trio.errors import ConfigError


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_env(environ)
    assert "\n" not in str(info.value)
    return info.value


def auth(environ: dict[str, str]) -> AuthSettings:
    settings = from_env(environ).auth
    assert settings is not None
    return settings


def test_off_by_default() -> None:
    assert from_env({}).auth is None
    assert Settings().auth is None


def test_secret_and_defaults() -> None:
    settings = auth({"AUTH_JWT_SECRET": SECRET})
    assert settings.secret == SECRET
    assert settings.public_key is None and settings.jwks_url is None
    assert settings.audience is None and settings.issuer is None
    assert settings.leeway == 5.0
    assert settings.anonymous is False
    assert settings.refresh_notice == 30.0


def test_every_variable() -> None:
    settings = auth(
        {
            "AUTH_JWT_SECRET": SECRET,
            "AUTH_AUDIENCE": "chat",
            "AUTH_ISSUER": "https://idp.example/",
            "AUTH_LEEWAY": "0",
            "AUTH_ANONYMOUS": "true",
            "AUTH_REFRESH_NOTICE": "2m",
        }
    )
    assert settings.audience == "chat"
    assert settings.issuer == "https://idp.example/"
    assert settings.leeway == 0.0
    assert settings.anonymous is True
    assert settings.refresh_notice == 120.0


def test_public_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text(public_pem(ec_key()))
    settings = auth({"AUTH_JWT_PUBLIC_KEY": str(path)})
    assert settings.public_key == public_pem(ec_key())
    assert settings.public_key_path == str(path)


@pytest.mark.parametrize(
    "url", ["https://idp.example/jwks.json", "http://127.0.0.1:1/k", "file:///etc/jwks.json"]
)
def test_jwks_url(url: str) -> None:
    assert auth({"AUTH_JWKS_URL": url}).jwks_url == url


@pytest.mark.parametrize(
    "name",
    ["AUTH_AUDIENCE", "AUTH_ISSUER", "AUTH_LEEWAY", "AUTH_ANONYMOUS", "AUTH_REFRESH_NOTICE"],
)
def test_other_auth_variable_without_a_key_is_invalid(name: str) -> None:
    value = {"AUTH_LEEWAY": "5s", "AUTH_ANONYMOUS": "true", "AUTH_REFRESH_NOTICE": "30s"}.get(
        name, "x"
    )
    error = config_error({name: value})
    assert error.variable == name
    assert str(error).startswith(f"{name}: ")


def test_blank_values_count_as_unset() -> None:
    assert from_env({"AUTH_AUDIENCE": " ", "AUTH_JWT_SECRET": ""}).auth is None


def test_two_key_variables_are_invalid(tmp_path: Path) -> None:
    error = config_error({"AUTH_JWT_SECRET": SECRET, "AUTH_JWKS_URL": "https://idp/k"})
    assert error.variable == "AUTH_JWKS_URL"


def test_unknown_auth_variable_is_named() -> None:
    error = config_error({"AUTH_JWT_SECRET": SECRET, "AUTH_AUDEINCE": "chat"})
    assert error.variable == "AUTH_AUDEINCE"


def test_short_secret() -> None:
    error = config_error({"AUTH_JWT_SECRET": "short"})
    assert error.variable == "AUTH_JWT_SECRET"
    assert "32 bytes" in str(error)
    assert "short" not in str(error).split(":", 1)[1].replace("openssl", "")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("hello", "not a PEM"),
        ("private", "private key"),
        ("small", "1024 bits"),
    ],
)
def test_bad_public_key_file(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "key.pem"
    if content == "private":
        path.write_text(private_pem(rsa_key()))
    elif content == "small":
        path.write_text(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    elif content is not None:
        path.write_text(content)
    error = config_error({"AUTH_JWT_PUBLIC_KEY": str(path)})
    assert error.variable == "AUTH_JWT_PUBLIC_KEY"
    assert problem in str(error)
    assert "PRIVATE" not in str(error)


@pytest.mark.parametrize("url", ["ftp://idp/jwks", "idp.example/jwks", "https:///jwks", "file://"])
def test_bad_jwks_url(url: str) -> None:
    assert config_error({"AUTH_JWKS_URL": url}).variable == "AUTH_JWKS_URL"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH_LEEWAY", "soon"),
        ("AUTH_LEEWAY", "-1"),
        ("AUTH_LEEWAY", "2h"),
        ("AUTH_LEEWAY", "7200"),
        ("AUTH_ANONYMOUS", "maybe"),
        ("AUTH_REFRESH_NOTICE", "0"),
        ("AUTH_REFRESH_NOTICE", "x"),
    ],
)
def test_bad_values(name: str, value: str) -> None:
    assert config_error({"AUTH_JWT_SECRET": SECRET, name: value}).variable == name


@pytest.mark.parametrize(
    ("text", "expected"), [("1", True), ("yes", True), ("FALSE", False), ("0", False)]
)
def test_anonymous_spellings(text: str, expected: bool) -> None:
    assert auth({"AUTH_JWT_SECRET": SECRET, "AUTH_ANONYMOUS": text}).anonymous is expected


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    settings = from_env({"AUTH_JWT_SECRET": SECRET, "ADMIN_TOKEN": "admin-secret-value"})
    text = repr(settings)
    assert SECRET not in text
    assert "admin-secret-value" not in text
    path = tmp_path / "key.pem"
    path.write_text(public_pem(ec_key()))
    assert "BEGIN PUBLIC KEY" not in repr(from_env({"AUTH_JWT_PUBLIC_KEY": str(path)}))


def test_auth_settings_need_exactly_one_key_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AuthSettings()
    with pytest.raises(ValueError, match="exactly one"):
        AuthSettings(secret=SECRET, jwks_url="https://idp/k")
