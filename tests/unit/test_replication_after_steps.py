"""history.after_plain_steps: the replica after a sync, as the planner's plan tells it,
for the cycle's prune (it then need not ask the replica to walk its snapshots again).

Each plan here comes from the real planner; the expected replica is what ZFS would
list after the receive (same GUIDs in the same order), or None where the plan
cannot tell it exactly.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_replication_plan import VOL, S, on_dest, replica
from zflock.replication.history import after_plain_steps
from zflock.replication.model import PlanOptions, ReplicaInfo, SnapRef, Source
from zflock.replication.plan import plan_replication

EPOCH = 5  # the planner tests' replicas carry epoch 5


def after(
    source: list[SnapRef], dest: ReplicaInfo, options: PlanOptions | None = None
) -> ReplicaInfo | None:
    src = Source(VOL, EPOCH, source)
    return after_plain_steps(dest, src, plan_replication(src, dest, options or PlanOptions()))


def guids(info: ReplicaInfo | None) -> list[int] | None:
    return None if info is None else [s.guid for s in info.snapshots]


def test_incremental_with_intermediates_adds_every_source_snapshot_after_the_base() -> None:
    got = after(S[:5], replica(on_dest(S[0], S[1])))
    assert guids(got) == [s.guid for s in S[:5]]
    assert got is not None
    orders = [s.order for s in got.snapshots]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_newest_only_adds_the_newest_alone() -> None:
    got = after(S[:5], replica(on_dest(S[0], S[1])), PlanOptions(intermediates=False))
    assert guids(got) == [S[0].guid, S[1].guid, S[4].guid]


def test_up_to_date_plans_have_no_steps_and_tell_nothing() -> None:
    # The driver keeps the destination it planned from in that case (driver.py).
    assert after(S[:2], replica(on_dest(S[0], S[1]))) is None


def test_what_the_plan_cannot_tell_exactly_is_asked() -> None:
    cases = [
        replica([]),  # absent: a full stream
        ReplicaInfo(exists=False),
        replica(on_dest(S[0]), modified_since_last_snapshot=True),  # a rollback
        replica([*on_dest(S[0]), SnapRef("op", 999, order=50)]),  # -F over its own
        replica(on_dest(S[0]), resume_token="1-abc", resume_to_guid=S[1].guid),
    ]
    options = PlanOptions(force_rollback=True, resume_supported=True)
    for dest in cases:
        # Each has steps (a full stream, a forced receive, a resume): none is up to date.
        assert plan_replication(Source(VOL, EPOCH, S[:3]), dest, options).steps, dest
        assert after(S[:3], dest, options) is None, dest


@given(
    have=st.integers(1, len(S)),
    extra=st.integers(0, len(S) - 1),
    intermediates=st.booleans(),
)
def test_a_prediction_is_what_a_plain_receive_would_list(
    have: int, extra: int, intermediates: bool
) -> None:
    source = S[: min(len(S), have + extra)]
    dest = replica(on_dest(*S[:have]))
    got = after(source, dest, PlanOptions(intermediates=intermediates))
    if len(source) == have:
        assert got is None  # up to date
        return
    expected = [s.guid for s in S[:have]]
    expected += [s.guid for s in source[have:]] if intermediates else [source[-1].guid]
    assert guids(got) == expected


def test_a_plan_from_another_source_list_tells_nothing() -> None:
    dest = replica(on_dest(S[0], S[1]))
    plan = plan_replication(Source(VOL, EPOCH, S[:4]), dest, PlanOptions())
    assert after_plain_steps(dest, Source(VOL, EPOCH, S[2:4]), plan) is None  # base missing
    assert after_plain_steps(dest, Source(VOL, EPOCH, S[:2]), plan) is None  # `to` missing
