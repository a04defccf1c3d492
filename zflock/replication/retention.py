"""Retention: which of zflock's own snapshots to destroy (pure).

Keep rules in the style of zrepl's pruning, written as one string so they fit
a ZFS user property (`zflock:keep`, `zflock:keep-replica`):

    keep      := rule ( "," rule )*
    rule      := grid | last
    grid      := interval ( "|" interval )*
    interval  := COUNT "x" DURATION [ "(keep=" ( COUNT | "all" ) ")" ]
    last      := "last=" COUNT

e.g. `1x1h(keep=all) | 24x1h | 14x1d, last=10`. A grid lays its intervals
back to back, going back in time from an anchor (below): `24x1h` is 24
buckets of one hour. Each bucket keeps its oldest `keep` snapshots (1 unless
given; `all` keeps every one), so a snapshot that is kept tends to stay kept
as it ages into the next bucket. Snapshots older than the whole grid are not
kept by it. `last=N` keeps the newest N. A snapshot is kept when ANY rule
keeps it (a union).

The anchor is the time of the newest of zflock's snapshots that is not in the
future (or `now` when there is none), as zrepl anchors its grid at the newest
snapshot: a volume whose snapshotting stopped (agent down, replication
stalled) keeps the shape of its history instead of melting down to one
snapshot as the wall clock moves on. A snapshot's time is the UTC time in its
name (`naming.py`): a replica receives the same name, so both sides put a
snapshot in the same bucket. A snapshot named in the future (a clock that
stepped back) is never destroyed: it cannot be placed.

Whatever the rules say, this never destroys (the guarantees, each covered by
property tests):

* a snapshot zflock did not take (an operator's, or a name that is not ours);
* the newest snapshot of the dataset (the base of every next incremental);
* any peer's newest common snapshot (by GUID) with this dataset, as the peer
  reported its snapshots: destroying it would leave that replica with no
  incremental base ("no common snapshot", a full resend);
* the base of a resumable stream a peer still holds (`send -t` needs it);
* any GUID the caller protects.

To prune the primary, pass every replica as a peer; to prune a replica, pass
the primary as its one peer. A replica the primary could not ask is covered
by `protect_unasked`; a receiver checks a peer's request with `admit_prune`.
Executing a decision is pruning.py's (through the endpoints).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from zflock.errors import UsageError, ZflockError
from zflock.replication.history import diff, sort_history
from zflock.replication.model import SnapRef
from zflock.replication.naming import SNAPSHOT_PREFIX, is_own, parse_snapshot_name, snapshot_name
from zflock.units import format_duration, parse_duration

# Bounds that keep a rule set small enough to evaluate per sync and to store
# in a property: no rule keeps more than this many buckets or snapshots.
MAX_COUNT = 10_000
MAX_SPEC_LENGTH = 1024


class KeepRuleError(UsageError):
    """A keep rule string that does not follow the grammar."""


class PruneRefused(ZflockError):
    """A receiver refused a peer's prune request: its own rules keep a snapshot asked for."""


@dataclass(frozen=True)
class Interval:
    """`COUNT x LENGTH (keep=KEEP)`: COUNT buckets of LENGTH seconds each."""

    count: int
    length: int  # seconds
    keep: int | None = 1  # per bucket; None = all

    def text(self) -> str:
        suffix = "" if self.keep == 1 else f"(keep={'all' if self.keep is None else self.keep})"
        return f"{self.count}x{format_duration(self.length)}{suffix}"


@dataclass(frozen=True)
class Grid:
    intervals: tuple[Interval, ...]

    def text(self) -> str:
        return " | ".join(interval.text() for interval in self.intervals)


@dataclass(frozen=True)
class LastN:
    count: int

    def text(self) -> str:
        return f"last={self.count}"


KeepRule = Grid | LastN


@dataclass(frozen=True)
class KeepRules:
    """A parsed keep string; `text()` is its canonical form (parse(text()) == self)."""

    rules: tuple[KeepRule, ...]

    def text(self) -> str:
        return ", ".join(rule.text() for rule in self.rules)


_INTERVAL = re.compile(r"(\d+)\s*x\s*([0-9a-z]+)\s*(?:\(\s*keep\s*=\s*(\d+|all)\s*\))?")
_LAST = re.compile(r"last\s*=\s*(\d+)")


def _count(text: str, what: str, spec: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_COUNT:
        raise KeepRuleError(f"invalid keep rules {spec!r}: {what} {value} not in 1-{MAX_COUNT}")
    return value


def parse_keep(spec: str) -> KeepRules:
    """Parse a keep string (grammar in the module docstring); one-line errors."""
    if len(spec) > MAX_SPEC_LENGTH:
        raise KeepRuleError(f"invalid keep rules: longer than {MAX_SPEC_LENGTH} characters")
    text = spec.strip().lower()
    if not text:
        raise KeepRuleError("invalid keep rules '': give at least one rule, e.g. 'last=10'")
    rules: list[KeepRule] = []
    for raw_rule in text.split(","):
        rule = raw_rule.strip()
        last = _LAST.fullmatch(rule)
        if last:
            rules.append(LastN(_count(last[1], "last", spec)))
            continue
        intervals = []
        for raw_interval in rule.split("|"):
            match = _INTERVAL.fullmatch(raw_interval.strip())
            if match is None:
                raise KeepRuleError(
                    f"invalid keep rules {spec!r}: {raw_interval.strip()!r} is neither "
                    "'COUNTxDURATION[(keep=N|all)]' (e.g. 24x1h) nor 'last=N'"
                )
            try:
                length = parse_duration(match[2], "interval")
            except UsageError as exc:
                raise KeepRuleError(f"invalid keep rules {spec!r}: {exc}") from None
            keep = (
                None if match[3] == "all" else (_count(match[3], "keep", spec) if match[3] else 1)
            )
            intervals.append(Interval(_count(match[1], "count", spec), length, keep))
        rules.append(Grid(tuple(intervals)))
    return KeepRules(tuple(rules))


@dataclass(frozen=True)
class PeerHistory:
    """A peer's copy of the volume, as the peer itself reported it.

    `snapshots` are as listed there (its own `order`); `resume_base_guid` is
    the GUID of the snapshot an interrupted incremental stream starts from
    (decoded from the peer's resume token), when it holds one.
    """

    label: str
    snapshots: Sequence[SnapRef] = ()
    resume_base_guid: int | None = None


@dataclass(frozen=True)
class Retention:
    """The decision: what to destroy (oldest first) and why the rest stays."""

    destroy: tuple[SnapRef, ...]
    # GUID -> why the snapshot is kept whatever the rules say.
    protected: dict[int, str]


def _seconds(when: datetime) -> int:
    return int(when.timestamp())


@lru_cache(maxsize=8192)
def _taken_at(name: str, prefix: str) -> int | None:
    """The time in one of our snapshot names (None: not ours).

    Cached: the agent re-reads the same few hundred names at every sync of
    every volume, and parsing a timestamp is the costly part of a decision.
    """
    parsed = parse_snapshot_name(name, prefix)
    return None if parsed is None else _seconds(parsed[0])


def _kept_by_grid(grid: Grid, timed: list[tuple[SnapRef, int]], anchor: int) -> set[int]:
    """GUIDs a grid keeps; `timed` is (snapshot, time) oldest first, none after `anchor`."""
    # (interval index, bucket index within it) -> its snapshots, oldest first.
    buckets: dict[tuple[int, int], list[SnapRef]] = {}
    for snap, when in timed:
        age = anchor - when
        start = 0
        for index, interval in enumerate(grid.intervals):
            end = start + interval.count * interval.length
            if age < end:
                buckets.setdefault((index, (age - start) // interval.length), []).append(snap)
                break
            start = end
    kept: set[int] = set()
    for (index, _), snaps in buckets.items():
        keep = grid.intervals[index].keep
        kept.update(s.guid for s in (snaps if keep is None else snaps[:keep]))
    return kept


def plan_retention(
    snapshots: Sequence[SnapRef],
    rules: KeepRules,
    now: datetime,
    peers: Sequence[PeerHistory] = (),
    protect_guids: Collection[int] = (),
    prefix: str = SNAPSHOT_PREFIX,
) -> Retention:
    """Which of `snapshots` (one dataset's) to destroy under `rules` at `now`."""
    history = sort_history(snapshots, "dataset")
    if not history:
        return Retention((), {})
    protected: dict[int, str] = {g: "protected by the caller" for g in protect_guids}
    protected[history[-1].guid] = "the newest snapshot"
    for peer in peers:
        base = diff(history, sort_history(peer.snapshots, peer.label)).source_base
        if base is not None:
            protected.setdefault(base.guid, f"the newest common snapshot with {peer.label}")
        if peer.resume_base_guid is not None:
            protected.setdefault(
                peer.resume_base_guid, f"the base of {peer.label}'s resumable stream"
            )

    now_s = _seconds(now)
    timed: list[tuple[SnapRef, int]] = []
    for snap in history:
        when = _taken_at(snap.name, prefix)
        if when is None:
            continue  # not ours: never destroyed, and not counted by the rules
        if when > now_s:
            protected.setdefault(snap.guid, "named in the future (clock skew)")
            continue
        timed.append((snap, when))
    anchor = max((when for _, when in timed), default=now_s)

    kept: set[int] = set()
    for rule in rules.rules:
        if isinstance(rule, LastN):
            kept.update(s.guid for s, _ in timed[-rule.count :])
        else:
            kept.update(_kept_by_grid(rule, timed, anchor))
    destroy = tuple(s for s, _ in timed if s.guid not in kept and s.guid not in protected)
    return Retention(destroy, protected)


# most_kept refuses to simulate more snapshots than this (a few seconds of work).
MAX_SIMULATED = 100_000


def most_kept(rules: KeepRules, spacing: float, span: float) -> int:
    """The most snapshots a copy holds at once under `rules` when it gets one every
    `spacing` seconds for `span` seconds and is pruned after each, as a scheduled sync
    does: counted just after a snapshot is taken, before the prune that follows it.

    The ceiling a copy's snapshot count is checked against (the scale benchmark): a
    copy holding more keeps something its rules let go. Only the newest snapshot is
    protected here, as on a pair that is up to date; a caller allows for what a
    lagging peer's protection adds (its newest common snapshot, a resumable base).
    """
    if not spacing > 0 or not span >= 0:
        raise ValueError(f"most_kept needs spacing > 0 and span >= 0, got {spacing}, {span}")
    steps = int(span // spacing) + 1
    if steps > MAX_SIMULATED:
        raise ValueError(f"most_kept: {steps} snapshots to simulate, at most {MAX_SIMULATED}")
    start = datetime(2000, 1, 1, tzinfo=UTC)  # the grid is anchored at the newest: any start
    held: list[SnapRef] = []
    most = 0
    for i in range(steps):
        when = start + timedelta(seconds=i * spacing)
        held.append(SnapRef(snapshot_name(when, i), guid=i + 1, order=i + 1))
        most = max(most, len(held))
        gone = {s.guid for s in plan_retention(held, rules, when).destroy}
        held = [s for s in held if s.guid not in gone]
    return most


def protect_unasked(snapshots: Sequence[SnapRef], label: str, cursor: int | None) -> dict[int, str]:
    """What a primary keeps for a replica it could not ask: everything that could be its base.

    `cursor` is the order (createtxg) of the replica's replication cursor, the
    bookmark the primary moved to the last step that replica confirmed (OpenZFS
    only; None where there is none). The replica holds that snapshot (a hold on
    OpenZFS, its own rule everywhere) and only ever moves forward from it, so its
    newest common snapshot is the cursor's snapshot or a newer one: those stay.
    Without a cursor any snapshot could be its base, and every one stays.
    """
    reason = f"{label} could not be asked: it may still be its base"
    return {s.guid: reason for s in snapshots if cursor is None or s.order >= cursor}


def admit_prune(
    retention: Retention, requested: Sequence[SnapRef], owned: Sequence[SnapRef], label: str
) -> None:
    """The receiver's check of a peer's prune request (raise NotAdmitted, change nothing).

    `retention` is the receiver's own decision over its own snapshots (`owned`),
    listed now under its volume lock; a peer may ask to destroy only what that
    decision destroys too. The first refused snapshot is named with the reason.
    """
    allowed = {s.guid for s in retention.destroy}
    by_guid = {s.guid: s for s in owned}
    for ref in requested:
        if ref.guid in allowed:
            continue
        snap = by_guid.get(ref.guid)
        if snap is None:
            why = "it has no such snapshot"
        elif ref.guid in retention.protected:
            why = f"it is {retention.protected[ref.guid]}"
        elif not is_own(snap.name):
            why = "zflock did not take it"
        else:
            why = "its keep rules keep it"
        name = snap.name if snap is not None else ref.name
        raise PruneRefused(
            f"refusing to prune {label}@{name} (guid {ref.guid}): {why}; nothing was destroyed"
        )
