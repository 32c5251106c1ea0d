"""The text formatter caches each second's timestamp text: lines must not change."""

from __future__ import annotations

import logging

import pytest

from wsproto_trio.logs import TextFormatter

FORMAT = "%(asctime)s %(levelname)-7s [%(server_id)s] %(name)s: %(message)s"


def record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("wsproto_trio.connection", logging.INFO, "", 0, "m %s", ("x",), None)
    rec.created = created
    rec.msecs = int((created - int(created)) * 1000)
    rec.server_id = "s1"
    return rec


@pytest.mark.parametrize(
    "times",
    [
        [1_700_000_000.0, 1_700_000_000.123, 1_700_000_000.999],
        [1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5, 1_700_000_000.2],
        [1_700_003_599.5, 1_700_003_600.25, 1_800_000_000.75],
    ],
)
def test_lines_are_those_of_the_standard_formatter(times: list[float]) -> None:
    ours, standard = TextFormatter(), logging.Formatter(FORMAT)
    for created in times:
        assert ours.format(record(created)) == standard.format(record(created))
