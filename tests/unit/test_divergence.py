"""What `zflock rejoin` plans for a stale copy (zflock.cluster.divergence), on plain data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.cluster.divergence import (
    Copy,
    RejoinRefused,
    Snap,
    check_copies,
    diverged_dataset,
    plan_rejoin,
)

A, B, C = Snap("a", 1), Snap("b", 2), Snap("c", 3)
X, Y = Snap("zflock-diverged-x", 10), Snap("y", 11)


def test_incremental_preserves_the_newest_diverged_snapshot() -> None:
    plan = plan_rejoin("v", [A, B, X], [A, B, C], reseed=False, discard=False)
    assert (plan.mode, plan.common, plan.diverged, plan.preserve) == ("incremental", B, (X,), X)


def test_the_common_snapshot_is_found_by_guid_not_name() -> None:
    same_name = Snap("b", 99)  # the primary's "b" is another snapshot
    plan = plan_rejoin("v", [A, B, Y], [A, same_name], reseed=False, discard=False)
    assert plan.common == A and plan.diverged == (B, Y) and plan.preserve == Y


def test_nothing_diverged_nothing_to_preserve() -> None:
    plan = plan_rejoin("v", [A, B], [A, B, C], reseed=False, discard=False)
    assert plan.common == B and plan.diverged == () and plan.preserve is None


def test_discard_preserves_nothing() -> None:
    plan = plan_rejoin("v", [A, X], [A, C], reseed=False, discard=True)
    assert plan.diverged == (X,) and plan.preserve is None


def test_no_common_snapshot_suggests_reseed() -> None:
    with pytest.raises(RejoinRefused, match=r"no common snapshot .* --reseed"):
        plan_rejoin("v", [X], [C], reseed=False, discard=False)


def test_reseed_keeps_or_discards_the_dataset() -> None:
    kept = plan_rejoin("v", [X], [C], reseed=True, discard=False)
    assert (kept.mode, kept.common, kept.keep_dataset) == ("reseed", None, True)
    assert not plan_rejoin("v", [X], [C], reseed=True, discard=True).keep_dataset


@given(
    st.lists(st.integers(1, 30), unique=True, max_size=12),
    st.lists(st.integers(1, 30), unique=True, max_size=12),
)
def test_rollback_keeps_exactly_the_shared_history(local: list[int], remote: list[int]) -> None:
    """The common snapshot is the newest local one the primary has; everything after it
    is diverged and its newest is preserved; nothing at or before it is touched."""
    mine = [Snap(f"s{g}", g) for g in local]
    theirs = [Snap(f"s{g}", g) for g in remote]
    shared = [s for s in mine if s.guid in set(remote)]
    if not shared:
        with pytest.raises(RejoinRefused):
            plan_rejoin("v", mine, theirs, reseed=False, discard=False)
        return
    plan = plan_rejoin("v", mine, theirs, reseed=False, discard=False)
    assert plan.common == shared[-1]
    cut = mine.index(shared[-1])
    assert list(plan.diverged) == mine[cut + 1 :]
    assert plan.preserve == (mine[-1] if plan.diverged else None)


PRIMARY = Copy("node2", "id", "primary", 2)


@pytest.mark.parametrize(
    "local, primary, error",
    [
        (Copy("node1", "id", "replica", 1, stale=True), PRIMARY, None),
        (Copy("node1", "id", "replica", 2), PRIMARY, None),  # an ordinary replica: harmless
        (Copy("node1", "id", "primary", 1), PRIMARY, None),  # a fenced old primary
        (Copy("node1", "id", "primary", 2), PRIMARY, "node1 holds the primary of v"),
        (Copy("node1", "other", "replica", 1), PRIMARY, "different volumes"),
        (Copy("node1", "id", "replica", 1), Copy("node2", "id", "replica", 2), "not its primary"),
        (Copy("node1", "id", "replica", 1), None, "no copy of v on the primary's node"),
    ],
)
def test_check_copies(local: Copy, primary: Copy | None, error: str | None) -> None:
    if error is None:
        check_copies("v", local, primary)
        return
    with pytest.raises(RejoinRefused, match=error):
        check_copies("v", local, primary)


def test_the_diverged_dataset_is_named_by_time() -> None:
    when = datetime(2026, 12, 3, 19, 30, tzinfo=UTC)
    assert (
        diverged_dataset("tank/zflock", "web", when) == "tank/zflock/web-diverged-20261203T193000Z"
    )


# -- the receiver never destroys a diverged snapshot (replication/admit.py) ------------------


@pytest.mark.parametrize("name, admitted", [("zflock-diverged-20261203T193000Z", False),
                                            ("own", True)])  # fmt: skip
def test_a_receiver_never_destroys_a_diverged_snapshot(name: str, admitted: bool) -> None:
    from zflock.replication.admit import NotAdmitted, admit_cleanup
    from zflock.replication.endpoint import Cleanup
    from zflock.replication.model import ReplicaInfo, SnapRef, Source

    common, extra = SnapRef("zflock-20261203T190000Z-000001", 1, 1), SnapRef(name, 2, 2)
    source = Source("v", 2, [common, SnapRef("zflock-20261203T191000Z-000002", 3, 2)])
    dest = ReplicaInfo(exists=True, managed_volume="v", snapshots=[common, extra])
    # Even with the operator's --force-rollback: only `zflock rejoin` handles those.
    cleanup = Cleanup(destroy_snapshots=[extra], rollback_to=common, force_rollback=True)
    if admitted:
        admit_cleanup(source, dest, cleanup)
        return
    with pytest.raises(NotAdmitted, match="run zflock rejoin"):
        admit_cleanup(source, dest, cleanup)
