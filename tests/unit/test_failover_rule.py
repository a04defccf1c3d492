"""The failover decision (zflock/move/failover.py): examples, and properties over any answers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zflock.cluster.view import Copy, cluster_view
from zflock.move.failover import (
    Candidate,
    Plan,
    Reading,
    Refusal,
    Situation,
    decide,
    newer,
    old_primary,
)
from zflock.replication.model import SnapRef

NODES = ("node1", "node2", "node3")


def snaps(*guids: int) -> tuple[SnapRef, ...]:
    return tuple(SnapRef(f"s{g}", g, i) for i, g in enumerate(guids))


def situation(
    copies: list[Copy],
    candidates: dict[str, tuple[SnapRef, ...]],
    *,
    down: tuple[str, ...] = ("node1",),
    seconds: float | None = 100.0,
    wait: float = 40.0,
    times: dict[str, int] | None = None,
) -> Situation[Copy]:
    answered = tuple(n for n in NODES if n not in down)
    return Situation(
        volume="web", inventory=NODES, views=cluster_view(copies, down), answered=answered,
        candidates={
            n: Candidate(n, s, (times or {}).get(n)) for n, s in candidates.items()
        },
        readings=tuple(Reading(r, d, seconds, wait) for r in answered for d in down),
    )  # fmt: skip


def replica(node: str, epoch: int = 2, **kw: object) -> Copy:
    return Copy(name="web", node=node, id="id-a", role="replica", epoch=epoch, **kw)  # type: ignore[arg-type]


TWO = [replica("node2"), replica("node3")]


def test_the_freshest_replica_is_promoted_above_every_epoch_seen() -> None:
    s = situation(
        [replica("node2", 3), replica("node3", 2, stale="5/superseded/m")],
        {"node2": snaps(1, 2, 3), "node3": snaps(1, 2)},
    )
    plan = decide(s, to=None, force=False)
    assert isinstance(plan, Plan)
    assert (plan.target, plan.epoch, plan.snapshot.guid) == ("node2", 6, 3)
    assert plan.unreachable == ("node1",) and plan.forced == ()


def test_freshness_is_by_guid_not_by_name_or_node() -> None:
    # node2's newest is named "s9" but node3 holds it and one more: node3 is newer.
    a = Candidate("node2", (SnapRef("s9", 7, 5),))
    b = Candidate("node3", (SnapRef("a", 7, 1), SnapRef("b", 8, 2)))
    assert newer(b, a) and not newer(a, b)
    s = situation(TWO, {"node2": a.snapshots, "node3": b.snapshots})
    plan = decide(s, to=None, force=False)
    assert isinstance(plan, Plan) and plan.target == "node3"


def test_unrelated_newest_snapshots_compare_by_creation_time() -> None:
    s = situation(
        TWO, {"node2": snaps(1, 5), "node3": snaps(2, 6)}, times={"node2": 50, "node3": 40}
    )
    plan = decide(s, to=None, force=False)
    assert isinstance(plan, Plan) and plan.target == "node2"


def test_a_live_primary_is_moved_not_failed_over() -> None:
    s = situation([Copy("web", "node1", "id-a", "primary", 2), *TWO], {"node2": snaps(1)}, down=())
    refusal = decide(s, to=None, force=True)
    assert isinstance(refusal, Refusal) and refusal.kind == "primary-alive"
    assert "zflock move web --to NODE" in refusal.reason


def test_a_self_fenced_primary_that_answers_is_moved_too() -> None:
    fenced = Copy("web", "node1", "id-a", "primary", 2, fenced="no-majority/1")
    s = situation([fenced, *TWO], {"node2": snaps(1)}, down=())
    refusal = decide(s, to=None, force=True)
    assert isinstance(refusal, Refusal) and refusal.kind == "primary-alive"
    assert "answers (it fenced itself" in refusal.reason


def test_to_a_staler_replica_needs_force() -> None:
    s = situation(TWO, {"node2": snaps(1, 2), "node3": snaps(1)})
    refusal = decide(s, to="node3", force=False)
    assert isinstance(refusal, Refusal) and refusal.kind == "staler"
    assert "node2 holds a newer snapshot (@s2) than node3 (@s1)" in refusal.reason
    plan = decide(s, to="node3", force=True)
    assert isinstance(plan, Plan) and plan.target == "node3" and len(plan.forced) == 1


def test_too_soon_shows_the_time_left_and_force_skips_it() -> None:
    s = situation(TWO, {"node2": snaps(1), "node3": snaps(1)}, seconds=12.0, wait=40.0)
    refusal = decide(s, to=None, force=False)
    assert isinstance(refusal, Refusal) and refusal.kind == "too-soon"
    assert "node1 has been unreachable for 12 s" in refusal.reason
    assert "28 s left" in refusal.reason
    assert isinstance(decide(s, to=None, force=True), Plan)


def test_a_node_that_still_reaches_the_old_primary_refuses() -> None:
    s = situation(TWO, {"node2": snaps(1), "node3": snaps(1)}, seconds=None)
    refusal = decide(s, to=None, force=False)
    assert isinstance(refusal, Refusal) and refusal.kind == "too-soon"
    assert "node1 answered node2 moments ago" in refusal.reason
    assert "40 s left" in refusal.reason


def test_no_majority_and_no_replica_and_bad_targets() -> None:
    s = situation([replica("node3")], {"node3": snaps(1)}, down=("node1", "node2"))
    refusal = decide(s, to=None, force=False)
    assert isinstance(refusal, Refusal) and refusal.kind == "no-majority"
    s = situation([replica("node2", stale="3/superseded/m")], {"node2": snaps(1)})
    refusal = decide(s, to=None, force=True)
    assert isinstance(refusal, Refusal) and refusal.kind == "no-replica"
    assert "unreachable: node1; stale: node2" in refusal.reason
    s = situation(TWO, {"node2": snaps(1), "node3": snaps(1)})
    for to, text in (
        ("node1", "node1 did not answer"),
        ("node9", "not in the inventory"),
    ):
        refusal = decide(s, to=to, force=True)
        assert isinstance(refusal, Refusal) and text in refusal.reason
    refusal = decide(situation([], {}), to=None, force=True)
    assert isinstance(refusal, Refusal) and refusal.kind == "not-found"


def test_the_old_primary_is_the_one_unreachable_non_target() -> None:
    assert old_primary(["node1"], ["node2", "node3"]) == "node1"
    assert old_primary(["node1", "node4"], ["node2"]) is None


# -- properties ---------------------------------------------------------------------

copies_st = st.lists(
    st.builds(
        Copy,
        name=st.just("web"),
        node=st.sampled_from(NODES),
        id=st.just("id-a"),
        role=st.sampled_from(["primary", "replica"]),
        epoch=st.integers(1, 5),
        stale=st.one_of(st.none(), st.builds("{}/superseded/m".format, st.integers(1, 7))),
    ),
    unique_by=lambda c: c.node,
)
guids_st = st.lists(st.integers(1, 6), unique=True, max_size=4).map(sorted)


@given(
    copies_st,
    st.dictionaries(st.sampled_from(NODES), guids_st),
    st.sets(st.sampled_from(NODES), max_size=2),
    st.one_of(st.none(), st.floats(0, 100)),
    st.one_of(st.none(), st.sampled_from(NODES)),
    st.booleans(),
)
def test_a_plan_never_breaks_the_rules(
    copies: list[Copy],
    snapshot_guids: dict[str, list[int]],
    down: set[str],
    seconds: float | None,
    to: str | None,
    force: bool,
) -> None:
    reachable = [c for c in copies if c.node not in down]
    s = situation(
        reachable,
        {n: snaps(*g) for n, g in snapshot_guids.items() if n not in down},
        down=tuple(sorted(down)),
        seconds=seconds,
    )
    plan = decide(s, to=to, force=force)
    if isinstance(plan, Refusal):
        assert "\n" not in plan.reason
        return
    [view] = s.views
    # Never while a primary answers; only a reachable, non-stale replica with a snapshot.
    assert view.primary is None and plan.target not in down
    assert view.status(plan.target) == "replica"
    assert to in (None, plan.target)
    # Above every epoch any reachable copy has seen.
    assert plan.epoch > view.seen_epoch >= max(c.epoch for c in reachable)
    # Without --force: a majority answered, every reading is past its wait, and
    # no reachable replica is newer than the one promoted.
    if not force:
        assert len(s.answered) * 2 > len(NODES)
        assert all(r.seconds is not None and r.seconds >= r.wait for r in s.readings)
        target = s.candidates[plan.target]
        assert not any(
            newer(c, target) for n, c in s.candidates.items() if view.status(n) == "replica"
        )
