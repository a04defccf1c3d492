"""Names of zflock's own snapshots: format, parsing, ownership."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.replication.naming import (
    SNAPSHOT_PREFIX,
    is_own,
    next_sequence,
    parse_snapshot_name,
    snapshot_name,
)

# ZFS snapshot component rules as the zfs layer enforces them.
_ZFS_COMPONENT = re.compile(r"[A-Za-z0-9_.:-]+")


def test_format_matches_the_documented_example() -> None:
    when = datetime(2026, 11, 25, 17, 45, 0, tzinfo=UTC)
    assert snapshot_name(when, 42) == "zflock-20261125T174500Z-000042"
    assert SNAPSHOT_PREFIX == "zflock-"


def test_other_time_zones_are_converted_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    when = datetime(2026, 11, 25, 18, 45, 0, tzinfo=cet)
    assert snapshot_name(when, 1) == "zflock-20261125T174500Z-000001"


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        snapshot_name(datetime(2026, 1, 1), 1)


def test_negative_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        snapshot_name(datetime(2026, 1, 1, tzinfo=UTC), -1)


def test_large_sequence_is_not_truncated() -> None:
    name = snapshot_name(datetime(2026, 1, 1, tzinfo=UTC), 12345678)
    assert name.endswith("-12345678")
    parsed = parse_snapshot_name(name)
    assert parsed is not None and parsed[1] == 12345678


@pytest.mark.parametrize(
    "name",
    [
        "daily",
        "zflock-before-upgrade",  # prefix alone does not make it ours
        "zflock-20261125T174500Z",  # no sequence
        "zflock-20261125T174500Z-42",  # sequence too short
        "zflock-20261325T174500Z-000042",  # month 13
        "zflock-20261125T174500-000042",  # no Z
        "zflock-20261125T174500Z-000042x",
        "xzflock-20261125T174500Z-000042",
        "ZFLOCK-20261125T174500Z-000042",
        "",
    ],
)
def test_foreign_names_are_not_ours(name: str) -> None:
    assert parse_snapshot_name(name) is None
    assert not is_own(name)


def test_full_snapshot_name_is_accepted() -> None:
    assert is_own("tank/zflock/shop-db@zflock-20261125T174500Z-000042")
    assert not is_own("tank/zflock/zflock-20261125T174500Z-000042@daily")


def test_custom_prefix() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    name = snapshot_name(when, 7, prefix="zf.")
    assert name == "zf.20260102T030405Z-000007"
    assert is_own(name, prefix="zf.")
    assert not is_own(name)


def test_next_sequence_ignores_foreign_names() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    names = ["daily", snapshot_name(when, 3), "zflock-manual", snapshot_name(when, 9)]
    assert next_sequence(names) == 10
    assert next_sequence(["daily"]) == 0
    assert next_sequence([]) == 0


@given(
    when=st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.just(UTC),
    ),
    seq=st.integers(min_value=0, max_value=10**9),
)
def test_round_trip_and_valid_zfs_component(when: datetime, seq: int) -> None:
    name = snapshot_name(when, seq)
    assert _ZFS_COMPONENT.fullmatch(name)
    assert not name.startswith("-")
    assert len(name) < 200
    assert parse_snapshot_name(name) == (when.replace(microsecond=0), seq)
    assert is_own(name)


@given(
    a=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2999, 12, 31),
        timezones=st.just(UTC),
    ),
    b=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2999, 12, 31),
        timezones=st.just(UTC),
    ),
    seq=st.integers(min_value=0, max_value=999_999),
)
def test_names_sort_by_time(a: datetime, b: datetime, seq: int) -> None:
    # Readable in `zfs list`: lexical order follows time (ordering for
    # replication still comes from createtxg, never from names).
    a, b = a.replace(microsecond=0), b.replace(microsecond=0)
    if a < b:
        assert snapshot_name(a, seq) < snapshot_name(b, seq)
