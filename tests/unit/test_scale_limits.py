"""What the scale benchmark checks against: the most snapshots keep rules allow on a
scheduled copy (retention.most_kept), and the scheduler's record of how late its runs
start (schedule.LatenessLog, read back with lateness_since)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.replication.retention import (
    Grid,
    Interval,
    KeepRules,
    LastN,
    most_kept,
    parse_keep,
)
from zflock.replication.schedule import LatenessLog, lateness_since

DEFAULT = parse_keep("1x1h(keep=all) | 24x1h | 14x1d")


def test_keep_all_for_an_hour_keeps_every_snapshot_of_ten_minutes() -> None:
    # 0, 30, ..., 600 s: 21 snapshots, none old enough to leave the first bucket.
    assert most_kept(DEFAULT, 30.0, 600.0) == 21
    assert most_kept(DEFAULT, 30.0, 0.0) == 1


def test_last_n_holds_n_plus_the_one_just_taken() -> None:
    assert most_kept(parse_keep("last=5"), 30.0, 3600.0) == 6
    assert most_kept(parse_keep("last=5"), 30.0, 60.0) == 3  # only 3 were ever taken


def test_after_the_first_hour_the_grid_thins_out() -> None:
    # 120 in the keep-all hour, then one an hour: 2 hours hold 120 + 1 + the new one,
    # far fewer than the 241 taken.
    two_hours = most_kept(DEFAULT, 30.0, 2 * 3600.0)
    assert 120 < two_hours < 130


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="spacing"):
        most_kept(DEFAULT, 0.0, 60.0)
    with pytest.raises(ValueError, match="at most"):
        most_kept(DEFAULT, 1.0, 1e9)


intervals = st.builds(
    Interval,
    count=st.integers(1, 4),
    length=st.sampled_from([60, 120, 300]),
    keep=st.integers(1, 3),
)
rules = st.lists(
    st.one_of(
        st.builds(Grid, st.lists(intervals, min_size=1, max_size=3).map(tuple)),
        st.builds(LastN, st.integers(1, 6)),
    ),
    min_size=1,
    max_size=3,
).map(lambda r: KeepRules(tuple(r)))


def _bound(r: KeepRules) -> int:
    """What the rules can keep at most, whatever the history."""
    total = 0
    for rule in r.rules:
        if isinstance(rule, LastN):
            total += rule.count
        else:
            total += sum(i.count * (i.keep or 0) for i in rule.intervals)
    return total


@given(r=rules, spacing=st.sampled_from([7.0, 28.5, 30.0, 61.0]), span=st.floats(0, 3600))
def test_never_more_than_the_rules_keep_plus_newest_and_new(
    r: KeepRules, spacing: float, span: float
) -> None:
    most = most_kept(r, spacing, span)
    taken = int(span // spacing) + 1
    # Kept by the rules, the newest (always protected), and the one just taken.
    assert 1 <= most <= min(taken, _bound(r) + 2)
    assert most_kept(r, spacing, span + spacing) >= most  # a longer history never holds less


def test_lateness_log_keeps_the_latest_and_counts_all() -> None:
    log = LatenessLog(kept=3)
    for late in (0.5, -1.0, 2.25, 3.0004):
        log.add(late)
    assert list(log.values) == [0.0, 2.25, 3.0]  # never negative, ms resolution
    assert log.count == 4


def test_a_reader_takes_exactly_the_new_values() -> None:
    log = LatenessLog(kept=4)
    for late in (1.0, 2.0):
        log.add(late)
    taken, lost = lateness_since(0, log.count, list(log.values))
    assert (taken, lost) == ([1.0, 2.0], 0)
    seen = log.count
    for late in (3.0, 4.0, 5.0, 6.0, 7.0):
        log.add(late)
    taken, lost = lateness_since(seen, log.count, list(log.values))
    assert (taken, lost) == ([4.0, 5.0, 6.0, 7.0], 1)  # 3.0 fell out before it was read
    assert lateness_since(log.count, log.count, list(log.values)) == ([], 0)


@given(
    values=st.lists(st.floats(0, 100), max_size=50),
    kept=st.integers(1, 10),
    seen=st.integers(0, 60),
)
def test_lateness_since_never_invents_or_repeats(values: list[float], kept: int, seen: int) -> None:
    log = LatenessLog(kept=kept)
    for v in values:
        log.add(v)
    taken, lost = lateness_since(seen, log.count, list(log.values))
    assert lost >= 0
    assert len(taken) <= len(log.values)
    assert taken == list(log.values)[len(log.values) - len(taken) :]
    if seen <= log.count:
        assert len(taken) + lost == log.count - seen
