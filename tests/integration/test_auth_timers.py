"""The expiry timer on trio's clock (MockClock): notice, close, re-arming on refresh."""

from __future__ import annotations

import trio
import trio.testing

from wsproto_trio.server.expiry import ExpiryTimer

EPOCH = 1_800_000_000.0  # the fake wall clock at trio time 0


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float, float | None]] = []

    def notice(self, exp: float) -> None:
        self.events.append(("notice", trio.current_time(), exp))

    def expire(self) -> None:
        self.events.append(("expire", trio.current_time(), None))


def timer(recorder: Recorder, notice: float = 30.0) -> ExpiryTimer:
    start = trio.current_time()
    return ExpiryTimer(
        notice,
        recorder.notice,
        recorder.expire,
        wall_clock=lambda: EPOCH + trio.current_time() - start,
    )


async def test_notice_before_exp_then_close_at_exp(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    await expiry.serve()
    assert recorder.events == [("notice", 70.0, EPOCH + 100), ("expire", 100.0, None)]


async def test_notice_at_once_when_less_is_left(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 10)
    await expiry.serve()
    assert recorder.events == [("notice", 0.0, EPOCH + 10), ("expire", 10.0, None)]


async def test_already_expired_closes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH - 3)  # accepted within AUTH_LEEWAY, already past exp
    await expiry.serve()
    assert [(kind, at) for kind, at, _ in recorder.events] == [("notice", 0.0), ("expire", 0.0)]


async def test_no_exp_never_fires(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(None)
    with trio.move_on_after(10**6):
        await expiry.serve()
    assert recorder.events == []


async def test_refresh_rearms(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.serve)
        await trio.sleep(80)  # the notice went out at 70
        assert recorder.events == [("notice", 70.0, EPOCH + 100)]
        expiry.set(EPOCH + 500)  # refreshed at 80: new notice at 470, close at 500
        await trio.sleep(500)
    assert recorder.events == [
        ("notice", 70.0, EPOCH + 100),
        ("notice", 470.0, EPOCH + 500),
        ("expire", 500.0, None),
    ]


async def test_refresh_to_no_exp_disarms(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.serve)
        await trio.sleep(50)
        expiry.set(None)
        await trio.sleep(10_000)
        nursery.cancel_scope.cancel()
    assert recorder.events == []


async def test_deadlines_do_not_follow_wall_clock_steps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    wall = [EPOCH]
    expiry = ExpiryTimer(30.0, recorder.notice, recorder.expire, wall_clock=lambda: wall[0])
    expiry.set(EPOCH + 100)
    wall[0] += 3600  # an NTP step after the deadlines were fixed
    await expiry.serve()
    assert [(kind, at) for kind, at, _ in recorder.events] == [("notice", 70.0), ("expire", 100.0)]
