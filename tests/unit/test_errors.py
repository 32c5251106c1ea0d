"""errors: every protocol error carries the wire code PROTOCOL.md section 5 assigns it."""

from __future__ import annotations

import pytest

from wsproto_trio import errors
from wsproto_trio.errors import ConfigError, ProtocolError, WsprotoTrioError

WIRE_CODES = [
    (errors.InvalidJson, "invalid_json"),
    (errors.InvalidMessage, "invalid_message"),
    (errors.UnknownChannel, "unknown_channel"),
    (errors.UnknownType, "unknown_type"),
    (errors.InvalidRoom, "invalid_room"),
    (errors.NotJoined, "not_joined"),
    (errors.AlreadyJoined, "already_joined"),
    (errors.UnsupportedFrame, "unsupported_frame"),
    (errors.RateLimited, "rate_limited"),
    (errors.Unavailable, "unavailable"),
    (errors.Forbidden, "forbidden"),
    (errors.InvalidToken, "invalid_token"),
]


@pytest.mark.parametrize(("cls", "code"), WIRE_CODES, ids=[code for _, code in WIRE_CODES])
def test_protocol_error_code(cls: type[ProtocolError], code: str) -> None:
    exc = cls("what went wrong")
    assert exc.code == code
    assert exc.detail == "what went wrong"
    assert str(exc) == "what went wrong"
    assert isinstance(exc, ProtocolError)
    assert isinstance(exc, WsprotoTrioError)


def test_every_protocol_error_class_is_in_the_table() -> None:
    classes = {
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, ProtocolError)
        and value is not ProtocolError
    }
    assert classes == {cls for cls, _ in WIRE_CODES}
    assert len({code for _, code in WIRE_CODES}) == len(WIRE_CODES)


@pytest.mark.parametrize("cls", [ConfigError, errors.BrokerUnavailable])
def test_non_protocol_errors_are_not_protocol_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, WsprotoTrioError)
    assert not issubclass(cls, ProtocolError)


@pytest.mark.parametrize("variable", ["PORT", "RATE_BURST"])
def test_config_error_starts_with_variable(variable: str) -> None:
    exc = ConfigError(variable, "must be >= 1, got 0")
    assert str(exc) == f"{variable}: must be >= 1, got 0"
    assert exc.variable == variable
