"""Stream positions: offsets, epochs, recovery and the gap rules (PROTOCOL.md section 7).

Rules:
- a stream (the chat, each room) numbers its messages 1, 2, 3... within an
  epoch; a new epoch means its history was lost, and numbering restarts;
- a stream keeps its latest ``HISTORY_SIZE`` messages, so the log held for it
  covers offsets ``first .. top`` with ``first = top - len(log) + 1``;
- recovery from ``since = (N, E)`` succeeds only when E is the stream's epoch,
  ``N <= top`` and every message after N is still kept (``N >= first - 1``);
  it is all or nothing: a partial replay is never called recovered;
- on one server, a ``Tracker`` per subscribed stream knows the next offset it
  expects. The next one is delivered; a lower one is a duplicate and dropped;
  a higher one is a gap: it and everything after it are held while the gap is
  filled from the stream's log, then delivered in offset order. What the log
  no longer holds becomes one ``Lost`` notice (``lost_through``) followed by the
  rest of the stream; a new epoch is announced the same way.

Plain synchronous code; the hub executes what ``Tracker`` returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

EPOCH_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
HELD_LIMIT = 10_000  # live messages held per stream while a gap is being filled


class Position(NamedTuple):
    offset: int
    epoch: str


class Entry(NamedTuple):
    """A message on its way to clients: its position and its envelope.

    Plain events (joins, leaves, pings) have ``offset == 0`` and no epoch."""

    offset: int
    epoch: str
    text: str


def plain(text: str) -> Entry:
    return Entry(0, "", text)


def frame(position: Position, envelope: str) -> str:
    """The broker's wire form of a positioned message: ``"<offset> <epoch> <envelope>"``."""
    return f"{position.offset} {position.epoch} {envelope}"


def split(payload: str) -> Entry:
    """The inverse of ``frame``; a plain envelope (starting with ``{``) stays plain."""
    if not payload or not payload[0].isdigit():
        return Entry(0, "", payload)
    offset, epoch, text = payload.split(" ", 2)
    return Entry(int(offset), epoch, text)


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream as read from the broker: its position and the messages it keeps."""

    position: Position
    log: tuple[str, ...] = ()

    @property
    def first(self) -> int:
        """Offset of ``log[0]`` (``top + 1`` when nothing is kept)."""
        return self.position.offset - len(self.log) + 1

    def entries(self, after: int = 0) -> list[Entry]:
        """Kept messages with an offset above ``after``, oldest first."""
        first = self.first
        start = max(0, after + 1 - first)
        epoch = self.position.epoch
        return [Entry(first + i, epoch, text) for i, text in enumerate(self.log[start:], start)]


def recovers(state: StreamState, since: Position) -> bool:
    """Whether every message after ``since`` can be replayed from ``state``."""
    top = state.position.offset
    return (
        since.epoch == state.position.epoch
        and since.offset <= top
        and since.offset >= state.first - 1
    )


def replay(
    state: StreamState, since: Position | None, history: int | None
) -> tuple[list[Entry], bool | None]:
    """What a joiner (or a connecting chat client) gets before live traffic.

    Returns the entries to replay and the ``recovered`` flag (``None`` when no
    recovery was asked for): on recovery offsets N+1..top; otherwise, if
    ``history`` asks, the latest ``history`` kept messages up to top."""
    recovered: bool | None = None
    if since is not None:
        if recovers(state, since):
            return state.entries(since.offset), True
        recovered = False
    if history:
        kept = state.entries()
        return kept[-history:], recovered
    return [], recovered


@dataclass(frozen=True, slots=True)
class Lost:
    """Messages of ``epoch`` up to ``offset`` may be missing; the stream goes on at offset+1."""

    epoch: str
    offset: int


Output = Entry | Lost


@dataclass(slots=True)
class Tracker:
    """One server's view of one subscribed stream (see the module rules)."""

    epoch: str | None = None
    next: int = 1
    filling: bool = False
    held: list[Entry] = field(default_factory=list)
    # After a baseline from a read, messages below it may still be in flight to
    # this server; nothing has been delivered yet, so they are not duplicates.
    lenient: bool = False

    @property
    def known(self) -> bool:
        return self.epoch is not None

    def observe(self, position: Position) -> None:
        """A position read from the broker (a join, a stream read): a baseline when
        nothing is known yet; otherwise nothing (live traffic and fills decide)."""
        if self.epoch is None:
            self.epoch = position.epoch
            self.next = position.offset + 1
            self.lenient = True

    def accept(self, entry: Entry) -> tuple[list[Output], bool]:
        """A live positioned message. Returns what to deliver now, and whether a
        fill must be started (the caller then calls ``filled`` with the log)."""
        if self.filling:
            if len(self.held) < HELD_LIMIT:
                self.held.append(entry)
            # Past the bound the message is dropped here and found again in the
            # log by the next fill: holding is an optimisation, the log is the truth.
            return [], False
        if self.epoch is None:
            self.epoch = entry.epoch
            self.next = entry.offset + 1
            return [entry], False
        if entry.epoch != self.epoch:
            # History was lost (expiry, Redis flush): the new epoch counts from 1.
            self.epoch = entry.epoch
            self.next = 1
            if entry.offset == 1:
                self.next = 2
                return [Lost(entry.epoch, 0), entry], False
            self.held.append(entry)
            self.filling = True
            return [Lost(entry.epoch, 0)], True
        if entry.offset == self.next:
            self.next += 1
            self.lenient = False
            return [entry], False
        if entry.offset < self.next:
            if self.lenient:
                return [entry], False  # published before the baseline, arriving now
            return [], False  # a duplicate (a fill already delivered it)
        self.lenient = False
        self.held.append(entry)
        self.filling = True
        return [], True

    def refill(self) -> bool:
        """After a break in the subscription: fill from the last delivered offset.
        Returns whether a fill must be started (not when one already runs, or
        when nothing is known yet)."""
        if self.epoch is None or self.filling:
            return False
        self.filling = True
        return True

    def filled(self, state: StreamState) -> list[Output]:
        """The stream's log, read for a fill: what to deliver, in order."""
        out: list[Output] = []
        self.lenient = False
        if state.position.epoch != self.epoch:
            self.epoch = state.position.epoch
            self.next = 1
            out.append(Lost(state.position.epoch, 0))
        first = state.first
        if first > self.next and state.position.offset >= self.next:
            out.append(Lost(state.position.epoch, first - 1))
            self.next = first
        for entry in state.entries(self.next - 1):
            out.append(entry)
            self.next = entry.offset + 1
        held, self.held = self.held, []
        self.filling = False
        for entry in held:
            if entry.epoch != self.epoch or entry.offset < self.next:
                continue  # already delivered, or from an epoch that is gone
            if entry.offset > self.next:
                # Published after the read, and an earlier one is still missing:
                # fill again (the caller sees ``filling``).
                self.held.append(entry)
                self.filling = True
                continue
            if self.filling:
                self.held.append(entry)
                continue
            out.append(entry)
            self.next += 1
        return out
