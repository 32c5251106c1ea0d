"""backoff: capped exponential delays with full jitter, deterministic under a seeded rng."""

from __future__ import annotations

import itertools
import random

import pytest

from wsproto_trio.core.backoff import Backoff

CONFIGS = [
    pytest.param(0.1, 5.0, id="default"),
    pytest.param(0.5, 30.0, id="slow"),
    pytest.param(1.0, 1.0, id="cap-equals-base"),
    pytest.param(0.01, 0.3, id="cap-between-powers"),
]


class Top(random.Random):
    """Always the upper end of the jitter range, so delays are the ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Bottom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def ceiling(base: float, cap: float, attempt: int) -> float:
    return min(cap, base * 2.0**attempt)


@pytest.mark.parametrize(("base", "cap"), CONFIGS)
def test_ceilings_double_up_to_the_cap(base: float, cap: float) -> None:
    backoff = Backoff(base=base, cap=cap, rng=Top())
    delays = [backoff.next_delay() for _ in range(20)]
    assert delays == [ceiling(base, cap, n) for n in range(20)]
    assert delays[-1] == cap
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))


@pytest.mark.parametrize(("base", "cap"), CONFIGS)
def test_floor_is_half_the_ceiling(base: float, cap: float) -> None:
    backoff = Backoff(base=base, cap=cap, rng=Bottom())
    assert [backoff.next_delay() for _ in range(20)] == [
        ceiling(base, cap, n) / 2 for n in range(20)
    ]


def test_default_sequence() -> None:
    backoff = Backoff(rng=Top())
    assert [round(backoff.next_delay(), 9) for _ in range(8)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
    ]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31])
@pytest.mark.parametrize(("base", "cap"), CONFIGS)
def test_jittered_delay_lies_in_half_ceiling_to_ceiling(seed: int, base: float, cap: float) -> None:
    backoff = Backoff(base=base, cap=cap, rng=random.Random(seed))
    for attempt in range(40):
        top = ceiling(base, cap, attempt)
        delay = backoff.next_delay()
        assert top / 2 <= delay <= top
        assert delay <= cap


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_delays_grow_despite_jitter(seed: int) -> None:
    """Two attempts later the floor has passed the previous ceiling (below the cap)."""
    backoff = Backoff(base=0.1, cap=1000.0, rng=random.Random(seed))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(delays[n + 2] >= delays[n] for n in range(10))
    assert delays[-1] > 100 * delays[0] / 2


@pytest.mark.parametrize("seed", [0, 7, 1234])
def test_seeded_rng_is_deterministic(seed: int) -> None:
    first = Backoff(rng=random.Random(seed))
    second = Backoff(rng=random.Random(seed))
    assert [first.next_delay() for _ in range(30)] == [second.next_delay() for _ in range(30)]


def test_jitter_spreads_delays_at_the_cap() -> None:
    """Many servers reconnecting after one outage do not all wait the same time."""
    delays = {
        Backoff(cap=5.0, attempt=10, rng=random.Random(seed)).next_delay() for seed in range(50)
    }
    assert len(delays) == 50
    assert min(delays) < 3.0
    assert max(delays) > 4.5


@pytest.mark.parametrize("calls", [1, 3, 50])
def test_reset_restarts_from_base(calls: int) -> None:
    backoff = Backoff(base=0.1, cap=5.0, rng=Top())
    for _ in range(calls):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert [backoff.next_delay() for _ in range(3)] == [0.1, 0.2, 0.4]


def test_many_attempts_do_not_overflow() -> None:
    backoff = Backoff(base=0.1, cap=5.0, rng=random.Random(0))
    for _ in range(7):  # 0.1 * 2**6 = 6.4: capped from the seventh attempt on
        backoff.next_delay()
    for _ in range(10_000):
        assert 2.5 <= backoff.next_delay() <= 5.0
    assert backoff.attempt <= 32
