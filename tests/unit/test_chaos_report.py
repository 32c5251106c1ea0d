"""The chaos report's definitions and the fault schedule, on hand-made records."""

from __future__ import annotations

import pytest

from wsproto_trio.chaos.report import Delivery, LostNotice, Records, Recovery, Sent, compute
from wsproto_trio.chaos.schedule import CUT_FOR, QUIET_END, default_schedule


def records(*clients: int) -> Records:
    found = Records()
    for client in clients:
        found.subscriptions[client] = {"chat"}
    return found


class Feed:
    """Deliveries and notices in arrival order."""

    def __init__(self, found: Records) -> None:
        self.found = found
        self.seq = 0

    def send(self, msg_id: str, sender: int) -> None:
        self.found.sent[msg_id] = Sent(msg_id, sender, "chat", 0.0)

    def deliver(self, client: int, msg_id: str, offset: int, epoch: str = "E") -> None:
        self.seq += 1
        self.found.deliveries.append(
            Delivery(self.seq, float(self.seq), client, "chat", msg_id, epoch, offset)
        )

    def lost(self, client: int, offset: int, epoch: str = "E") -> None:
        self.seq += 1
        self.found.losts.append(
            LostNotice(self.seq, float(self.seq), client, "chat", epoch, offset)
        )


def report(found: Records) -> tuple[int, int, int, int, int, int]:
    r = compute(found, recovery=True, seconds=1, servers=1, clients=2, rooms=0, rate=1)
    return r.accepted, r.expected, r.delivered, r.duplicates, r.reordered, r.announced_lost


def test_an_accepted_message_is_expected_everywhere() -> None:
    found = records(0, 1)
    feed = Feed(found)
    feed.send("m1", 0)
    feed.deliver(0, "m1", 1)
    feed.deliver(1, "m1", 1)
    assert report(found) == (1, 2, 2, 0, 0, 0)


def test_a_message_without_its_echo_is_not_accepted() -> None:
    found = records(0, 1)
    feed = Feed(found)
    feed.send("m1", 0)
    feed.deliver(1, "m1", 1)
    assert report(found)[:3] == (0, 0, 0)


def test_missing_duplicate_and_reordered_are_counted() -> None:
    found = records(0, 1)
    feed = Feed(found)
    for n in (1, 2, 3):
        feed.send(f"m{n}", 0)
        feed.deliver(0, f"m{n}", n)
    feed.deliver(1, "m2", 2)
    feed.deliver(1, "m1", 1)
    feed.deliver(1, "m1", 1)
    accepted, expected, delivered, duplicates, reordered, _ = report(found)
    assert (accepted, expected, delivered) == (3, 6, 5)
    assert (duplicates, reordered) == (1, 1)


def test_a_lost_notice_covers_what_had_not_arrived() -> None:
    found = records(0, 1)
    feed = Feed(found)
    for n in (1, 2, 3):
        feed.send(f"m{n}", 0)
        feed.deliver(0, f"m{n}", n)
    feed.deliver(1, "m1", 1)
    feed.lost(1, 2)  # m2 may be missing; m3 is still expected
    assert report(found) == (3, 5, 4, 0, 0, 1)


def test_a_new_epoch_covers_everything_before_it() -> None:
    found = records(0, 1)
    feed = Feed(found)
    feed.send("old", 0)
    feed.deliver(0, "old", 7, "E")
    feed.lost(1, 0, "F")  # Redis lost its data: epoch F starts
    feed.send("new", 0)
    feed.deliver(0, "new", 1, "F")
    feed.deliver(1, "new", 1, "F")
    assert report(found) == (2, 3, 3, 0, 0, 1)


def test_the_last_line_is_exact() -> None:
    found = records(0)
    feed = Feed(found)
    feed.send("m1", 0)
    feed.deliver(0, "m1", 1)
    found.recoveries.append(Recovery(1.0, 0, 2.5, True, 3))
    r = compute(found, recovery=True, seconds=1, servers=1, clients=1, rooms=0, rate=1)
    assert r.last_line() == "chaos: delivered 1/1 (100.00%), duplicates 0, reordered 0"
    assert r.worst_recovery_s == 2.5


@pytest.mark.parametrize("seconds", [20.0, 60.0, 120.0])
def test_the_schedule_cuts_every_ten_seconds_and_ends_quiet(seconds: float) -> None:
    faults = default_schedule(seconds, 2)
    cuts = [f.at for f in faults if f.kind == "cut_clients"]
    assert cuts == [3.0 + 10 * k for k in range(len(cuts))]
    assert cuts[-1] + CUT_FOR <= seconds - QUIET_END
    others = [f for f in faults if f.kind != "cut_clients"]
    assert [f.kind for f in others] == ["cut_redis_link", "kill_server", "restart_redis"]
    for fault in others:  # never during a cut
        assert all(not (c <= fault.at < c + CUT_FOR) for c in cuts)
    assert all(f.at <= seconds - QUIET_END for f in faults)


def test_one_server_is_never_killed() -> None:
    assert "kill_server" not in {f.kind for f in default_schedule(60, 1)}


def test_a_later_notice_does_not_cover_an_older_gap() -> None:
    found = records(0, 1)
    feed = Feed(found)
    for n in (1, 2, 3):
        feed.send(f"m{n}", 0)
        feed.deliver(0, f"m{n}", n)
    feed.deliver(1, "m3", 3)  # m1, m2 missed without a word
    feed.lost(1, 0, "F")  # a new epoch later: it announces nothing about m1, m2
    assert report(found)[1:3] == (6, 4)
    assert report(found)[5] == 0
