"""Pruning: only zflock's own snapshots, never a replica's incremental base."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.errors import UsageError
from zflock.replication.naming import is_own, snapshot_name
from zflock.replication.plan import (
    PlanOptions,
    ReplicaInfo,
    SnapRef,
    Source,
    diff,
    plan_replication,
)
from zflock.replication.prune import prunable

T0 = datetime(2026, 11, 25, 17, 45, tzinfo=UTC)


def own(i: int) -> SnapRef:
    return SnapRef(snapshot_name(T0 + timedelta(minutes=i), i), guid=1000 + i, order=10 * i)


def operator(name: str, i: int) -> SnapRef:
    return SnapRef(name, guid=5000 + i, order=10 * i + 5)


def names(snaps: list[SnapRef]) -> list[str]:
    return [s.name for s in snaps]


def test_keeps_the_newest_and_prunes_the_rest_oldest_first() -> None:
    source = [own(i) for i in range(6)]
    assert prunable(source, {}, keep=2) == source[:4]


def test_operator_snapshots_are_never_pruned() -> None:
    source = [own(0), operator("daily", 0), own(1), operator("zflock-manual", 1), own(2)]
    pruned = prunable(source, {}, keep=1)
    assert pruned == [own(0), own(1)]


def test_newest_snapshot_is_kept_even_if_not_among_own() -> None:
    # The newest is an operator snapshot; it is not ours, so never pruned anyway,
    # and keep=1 still keeps our newest.
    source = [own(0), own(1), operator("manual", 2)]
    assert prunable(source, {}, keep=1) == [own(0)]


def test_replica_base_is_protected() -> None:
    source = [own(i) for i in range(6)]
    replicas = {
        "node2": [own(1)],  # far behind: its base is own(1)
        "node3": [own(0), own(3), SnapRef("local", 9, 99)],  # diverged; base own(3)
        "node4": [SnapRef("x", 7, 1)],  # nothing in common: nothing to protect
    }
    assert prunable(source, replicas, keep=1) == [own(0), own(2), own(4)]


def test_protect_guids_keeps_a_resumed_streams_base() -> None:
    source = [own(i) for i in range(4)]
    assert prunable(source, {}, keep=1, protect_guids={own(1).guid}) == [own(0), own(2)]


def test_custom_prefix() -> None:
    mine = SnapRef(snapshot_name(T0, 1, prefix="zf."), 1, 1)
    default = own(2)
    newest = SnapRef(snapshot_name(T0, 3, prefix="zf."), 3, 30)
    assert prunable([mine, default, newest], {}, keep=1, own_prefix="zf.") == [mine]


def test_keep_must_be_positive() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        prunable([own(0)], {}, keep=0)


def test_empty_source() -> None:
    assert prunable([], {"node2": [own(0)]}, keep=3) == []


def test_pruning_a_replica_uses_the_source_as_its_peer() -> None:
    replica = [own(i) for i in range(5)]
    source = [own(2), own(5)]  # the source pruned up to own(2), then took own(5)
    # The replica's base with the source is own(2): kept, with its newest one.
    assert prunable(replica, {"source": source}, keep=1) == [own(0), own(1), own(3)]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[SnapRef], dict[str, list[SnapRef]], int]:
    n = draw(st.integers(1, 12))
    source = [
        own(i) if draw(st.booleans()) or i == n - 1 else operator(f"op{i}", i) for i in range(n)
    ]
    replicas: dict[str, list[SnapRef]] = {}
    for node in ("node2", "node3"):
        prefix = draw(st.integers(0, n))
        kept = [s for s in source[:prefix] if draw(st.booleans())]
        replicas[node] = [SnapRef(s.name, s.guid, i) for i, s in enumerate(kept)]
    return source, replicas, draw(st.integers(1, 5))


@given(histories())
def test_pruning_never_breaks_the_next_incremental(
    case: tuple[list[SnapRef], dict[str, list[SnapRef]], int],
) -> None:
    source, replicas, keep = case
    pruned = prunable(source, replicas, keep)
    remaining = [s for s in source if s not in pruned]

    assert all(is_own(s.name) for s in pruned)
    assert source[-1] in remaining
    own_snaps = [s for s in source if is_own(s.name)]
    assert set(own_snaps[-keep:]) <= set(remaining)
    for snaps in replicas.values():
        # Same base and the same plan before and after pruning.
        assert diff(remaining, snaps).source_base == diff(source, snaps).source_base
        if snaps:
            info = ReplicaInfo(True, managed_volume="v", epoch=1, snapshots=snaps)
            before = plan_replication(Source("v", 1, source), info, PlanOptions())
            after = plan_replication(Source("v", 1, remaining), info, PlanOptions())
            assert before.steps == after.steps
