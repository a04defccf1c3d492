"""Retention: the keep grammar, and pruning that never breaks a replica's next incremental."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zflock.errors import ZflockError
from zflock.replication.history import diff
from zflock.replication.model import SnapRef
from zflock.replication.naming import is_own, snapshot_name
from zflock.replication.plan import PlanOptions, ReplicaInfo, Source, plan_replication
from zflock.replication.retention import (
    Grid,
    Interval,
    KeepRuleError,
    KeepRules,
    LastN,
    PeerHistory,
    parse_keep,
    plan_retention,
)

T0 = datetime(2026, 11, 25, 17, 45, tzinfo=UTC)
VOLUME_ID = "0f2b7c1e-0000-4000-8000-000000000001"
LATER = T0 + timedelta(days=1)
HOUR = 3600
DAY = 86400


def own(i: int, minutes: int | None = None) -> SnapRef:
    """Our i-th snapshot, taken `minutes` (default i) minutes after T0."""
    when = T0 + timedelta(minutes=i if minutes is None else minutes)
    return SnapRef(snapshot_name(when, i), guid=1000 + i, order=10 * i)


def operator(name: str, i: int) -> SnapRef:
    return SnapRef(name, guid=5000 + i, order=10 * i + 5)


def destroyed(snaps: list[SnapRef], keep: str, now: datetime, **kw: object) -> list[SnapRef]:
    return list(plan_retention(snaps, parse_keep(keep), now, **kw).destroy)  # type: ignore[arg-type]


# -- the grammar --------------------------------------------------------------------


def test_parse_the_issue_example() -> None:
    rules = parse_keep("1x1h(keep=all) | 24x1h | 14x1d, last=10")
    assert rules == KeepRules(
        (
            Grid((Interval(1, HOUR, None), Interval(24, HOUR, 1), Interval(14, DAY, 1))),
            LastN(10),
        )
    )
    assert rules.text() == "1x1h(keep=all) | 24x1h | 14x1d, last=10"


def test_parse_is_lenient_about_spaces_and_case() -> None:
    assert parse_keep(" 2X30m( keep = 3 ) ,LAST = 1 ").text() == "2x30m(keep=3), last=1"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "at least one rule"),
        ("24h", "neither"),
        ("0x1h", "count 0"),
        ("24x0s", "must be positive"),
        ("24x1h(keep=0)", "keep 0"),
        ("24x1h(keep=some)", "neither"),
        ("last=0", "last 0"),
        ("last=-1", "neither"),
        ("24x1h,", "neither"),
        ("24x1h || 1x1d", "neither"),
        ("1x1y", "interval"),
        ("99999x1h", "count 99999"),
        ("last=1, " * 200, "longer than"),
    ],
)
def test_malformed_keep_rules_are_one_line_errors(spec: str, problem: str) -> None:
    with pytest.raises(KeepRuleError, match=problem) as caught:
        parse_keep(spec)
    assert "\n" not in str(caught.value)


intervals = st.builds(
    Interval,
    count=st.integers(1, 100),
    length=st.integers(1, 30 * DAY),
    keep=st.one_of(st.none(), st.integers(1, 50)),
)
rule_sets = st.lists(
    st.one_of(
        st.builds(Grid, st.lists(intervals, min_size=1, max_size=4).map(tuple)),
        st.builds(LastN, st.integers(1, 1000)),
    ),
    min_size=1,
    max_size=4,
).map(lambda rules: KeepRules(tuple(rules)))


# Rules that destroy a lot, so the guarantees below are tested where they matter.
harsh_rule_sets = st.lists(
    st.one_of(
        st.builds(
            Grid,
            st.lists(
                st.builds(
                    Interval,
                    count=st.integers(1, 4),
                    length=st.integers(1, 6 * HOUR),
                    keep=st.one_of(st.none(), st.integers(1, 2)),
                ),
                min_size=1,
                max_size=3,
            ).map(tuple),
        ),
        st.builds(LastN, st.integers(1, 3)),
    ),
    min_size=1,
    max_size=2,
).map(lambda rules: KeepRules(tuple(rules)))


@given(rule_sets)
def test_canonical_text_round_trips(rules: KeepRules) -> None:
    assert parse_keep(rules.text()) == rules


# -- examples -----------------------------------------------------------------------


def test_last_n_keeps_the_newest_and_destroys_the_rest_oldest_first() -> None:
    snaps = [own(i) for i in range(6)]
    assert destroyed(snaps, "last=2", T0 + timedelta(hours=1)) == snaps[:4]


def test_operator_snapshots_are_never_destroyed_nor_counted() -> None:
    snaps = [own(0), operator("daily", 0), own(1), operator("zflock-manual", 1), own(2)]
    assert destroyed(snaps, "last=1", T0 + timedelta(hours=1)) == [own(0), own(1)]


def test_grid_keeps_the_oldest_per_bucket_anchored_at_the_newest() -> None:
    # One snapshot a minute for 3 hours; the grid keeps the last hour whole,
    # then one per hour. The anchor is the newest snapshot (minute 179).
    snaps = [own(i) for i in range(180)]
    gone = destroyed(snaps, "1x1h(keep=all) | 2x1h", T0 + timedelta(hours=3))
    kept = [s for s in snaps if s not in gone]
    # ages 0-59 min: all (minutes 120-179); bucket [1h,2h): ages 60-119 ->
    # minutes 60-119, oldest is 60; bucket [2h,3h): minutes 0-59, oldest 0.
    assert kept == [own(0), own(60), *snaps[120:]]


def test_a_stalled_volume_keeps_its_history_shape() -> None:
    snaps = [own(i, minutes=60 * i) for i in range(5)]  # hourly, 5 hours
    much_later = T0 + timedelta(days=365)
    assert destroyed(snaps, "24x1h", much_later) == []


def test_snapshots_named_in_the_future_are_kept() -> None:
    snaps = [own(0), own(1), own(2, minutes=10_000), own(3, minutes=3)]
    retention = plan_retention(snaps, parse_keep("last=1"), T0 + timedelta(minutes=5))
    assert list(retention.destroy) == [own(0), own(1)]
    assert "future" in retention.protected[own(2).guid]


def test_peer_bases_and_resume_bases_are_protected() -> None:
    snaps = [own(i) for i in range(8)]
    peers = [
        PeerHistory("node2", [own(1)]),  # far behind: its base is own(1)
        PeerHistory("node3", [own(0), own(3), SnapRef("local", 9, 99)]),  # base own(3)
        PeerHistory("node4", [SnapRef("x", 7, 1)], resume_base_guid=own(5).guid),
    ]
    retention = plan_retention(snaps, parse_keep("last=1"), LATER, peers=peers)
    assert list(retention.destroy) == [own(0), own(2), own(4), own(6)]
    assert retention.protected[own(1).guid] == "the newest common snapshot with node2"
    assert "resumable" in retention.protected[own(5).guid]


def test_protect_guids_and_the_newest_are_kept() -> None:
    snaps = [own(i) for i in range(4)]
    assert destroyed(snaps, "1x1s", LATER, protect_guids={own(1).guid}) == [own(0), own(2)]


def test_pruning_a_replica_uses_the_primary_as_its_peer() -> None:
    replica = [own(i) for i in range(5)]
    primary = [own(2), own(5)]  # the primary pruned up to own(2), then took own(5)
    peers = [PeerHistory("primary", primary)]
    assert destroyed(replica, "last=1", LATER, peers=peers) == [own(0), own(1), own(3)]


def test_the_newest_is_kept_even_when_its_bucket_keeps_an_older_one() -> None:
    snaps = [own(0, minutes=0), own(1, minutes=0), own(2, minutes=0)]  # one bucket
    retention = plan_retention(snaps, parse_keep("1x1h"), LATER)
    # The bucket keeps its oldest, own(0); own(2) is the newest.
    assert [s.guid for s in retention.destroy] == [own(1).guid]
    assert retention.protected[own(2).guid] == "the newest snapshot"


def test_custom_prefix() -> None:
    mine = SnapRef(snapshot_name(T0, 1, prefix="zf."), 1, 1)
    default = own(2)
    newest = SnapRef(snapshot_name(T0, 3, prefix="zf."), 3, 30)
    assert destroyed([mine, default, newest], "last=1", T0, prefix="zf.") == [mine]


def test_empty_dataset() -> None:
    assert destroyed([], "last=1", T0, peers=[PeerHistory("n", [own(0)])]) == []


# -- properties over generated histories --------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[SnapRef], list[PeerHistory], set[int]]:
    n = draw(st.integers(1, 30))
    minutes = sorted(draw(st.lists(st.integers(0, 60 * 24 * 20), min_size=n, max_size=n)))
    snaps = [
        own(i, minutes[i]) if draw(st.booleans()) or i == n - 1 else operator(f"op{i}", i)
        for i in range(n)
    ]
    peers = []
    for node in ("node2", "node3"):
        prefix = draw(st.integers(0, n))
        kept = [s for s in snaps[:prefix] if draw(st.booleans())]
        foreign = [SnapRef(f"local{j}", 90_000 + j, 0) for j in range(draw(st.integers(0, 2)))]
        listed = kept + foreign  # a replica's own snapshots come after what it received
        resume = draw(st.one_of(st.none(), st.sampled_from([s.guid for s in snaps])))
        peers.append(
            PeerHistory(node, [SnapRef(s.name, s.guid, j) for j, s in enumerate(listed)], resume)
        )
    protect = set(draw(st.lists(st.sampled_from([s.guid for s in snaps]), max_size=2)))
    return snaps, peers, protect


@given(histories(), harsh_rule_sets, st.integers(0, 60 * 24 * 30))
def test_retention_never_breaks_a_replica_nor_touches_what_is_not_ours(
    case: tuple[list[SnapRef], list[PeerHistory], set[int]], rules: KeepRules, at: int
) -> None:
    snaps, peers, protect = case
    retention = plan_retention(snaps, rules, T0 + timedelta(minutes=at), peers, protect)
    gone = set(retention.destroy)
    remaining = [s for s in snaps if s not in gone]

    assert all(is_own(s.name) for s in gone)  # never a foreign snapshot
    assert snaps[-1] in remaining  # never the newest
    assert not gone & {s for s in snaps if s.guid in protect}
    for peer in peers:
        # Never a peer's newest common snapshot nor a resumable stream's base:
        # the same base, and the same plan, before and after pruning.
        assert peer.resume_base_guid not in {s.guid for s in gone}
        assert (
            diff(remaining, peer.snapshots).source_base == diff(snaps, peer.snapshots).source_base
        )
        if peer.snapshots:
            info = ReplicaInfo(
                True,
                managed_volume="v",
                volume_id=VOLUME_ID,
                role="replica",
                epoch=1,
                snapshots=peer.snapshots,
            )
            assert _outcome(snaps, info) == _outcome(remaining, info)


def _outcome(snaps: list[SnapRef], info: ReplicaInfo) -> object:
    """The planned steps, or the kind of conflict."""
    try:
        source = Source("v", 1, snaps, volume_id=VOLUME_ID)
        return plan_replication(source, info, PlanOptions()).steps
    except ZflockError as exc:
        return type(exc)


@given(histories(), rule_sets, st.integers(0, 60 * 24 * 30))
def test_retention_is_idempotent(
    case: tuple[list[SnapRef], list[PeerHistory], set[int]], rules: KeepRules, at: int
) -> None:
    snaps, peers, protect = case
    now = T0 + timedelta(minutes=at)
    first = plan_retention(snaps, rules, now, peers, protect)
    remaining = [s for s in snaps if s not in first.destroy]
    assert plan_retention(remaining, rules, now, peers, protect).destroy == ()


def _bound(rules: KeepRules, period: int) -> int:
    """The most own snapshots the rules can keep when one is taken every `period` s."""
    total = 0
    for rule in rules.rules:
        if isinstance(rule, LastN):
            total += rule.count
            continue
        for interval in rule.intervals:
            per_bucket = -(-interval.length // period) + 1
            keep = per_bucket if interval.keep is None else min(interval.keep, per_bucket)
            total += interval.count * keep
    return total


@settings(max_examples=15, deadline=None)
@given(
    rules=st.sampled_from(
        [
            "1x1h(keep=all) | 24x1h | 14x1d",
            "10x10m(keep=2) | 6x1h",
            "last=5",
            "2x30m | 3x1d(keep=2), last=3",
            "1x1d(keep=all)",
        ]
    ),
    period=st.sampled_from([900, 3600]),
    days=st.integers(1, 16),
    lag=st.integers(0, 12),
)
def test_compressed_timeline_stays_within_the_rules(
    rules: str, period: int, days: int, lag: int
) -> None:
    """Days of snapshots every `period` s, pruned after every sync on both sides.

    The replica receives each snapshot `lag` periods late (a slow link), so
    its common base with the primary trails behind. At every step the
    primary keeps the replica's base and at the end holds no more than the
    rules allow plus the protected snapshots.
    """
    keep = parse_keep(rules)
    primary: list[SnapRef] = []
    replica: list[SnapRef] = []
    steps = days * DAY // period
    for step in range(steps):
        now = T0 + timedelta(seconds=step * period)
        primary.append(SnapRef(snapshot_name(now, step), guid=10_000 + step, order=step))
        # Replicate everything older than `lag` periods that the replica lacks
        # (an incremental from its base, -I: every intermediate).
        target = len(primary) - 1 - lag
        if target >= 0:
            have = {s.guid for s in replica}
            base = diff(primary, replica).source_base
            start = 0 if base is None else primary.index(base) + 1
            replica += [s for s in primary[start : target + 1] if s.guid not in have]
        base_before = diff(primary, replica).source_base
        pruned = plan_retention(primary, keep, now, [PeerHistory("replica", replica)])
        primary = [s for s in primary if s not in set(pruned.destroy)]
        back = plan_retention(replica, keep, now, [PeerHistory("primary", primary)])
        replica = [s for s in replica if s not in set(back.destroy)]
        assert diff(primary, replica).source_base == base_before
    # Protected beyond the rules: the newest and the replica's base.
    assert len(primary) <= _bound(keep, period) + 2
    assert len(replica) <= _bound(keep, period) + 2
