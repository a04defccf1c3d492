"""Table tests for the replication planner: every plan shape, every conflict."""

from __future__ import annotations

import pytest

from zflock.errors import ZflockError
from zflock.replication.plan import (
    DestinationIsPrimary,
    DestinationNotOurs,
    Diverged,
    EpochNewerOnDestination,
    Full,
    Incremental,
    NoCommonSnapshot,
    Plan,
    PlanOptions,
    ReplicaInfo,
    ReplicationConflict,
    Resume,
    SnapRef,
    SnapshotNameTaken,
    Source,
    SourceHasNoSnapshots,
    diff,
    plan_replication,
)

VOL = "shop-db"

# One shared "universe" of snapshots: the source history s1..s5 with GUIDs
# 101..105. Destination lists reuse these refs (same GUID = same snapshot)
# but with their own `order`, because createtxg differs between pools.
S = [SnapRef(f"s{i}", 100 + i, order=10 * i, size=1000 * i) for i in range(1, 6)]


def on_dest(*snaps: SnapRef, start: int = 7) -> list[SnapRef]:
    """The same snapshots as the destination lists them (its own txg numbers)."""
    return [SnapRef(s.name, s.guid, order=start + i) for i, s in enumerate(snaps)]


def foreign(name: str, guid: int) -> SnapRef:
    return SnapRef(name, guid, order=0)


def src(snaps: list[SnapRef] | None = None, epoch: int = 5) -> Source:
    return Source(VOL, epoch, S if snaps is None else snaps, label="node1:tank/zflock/shop-db")


def replica(snaps: list[SnapRef], **kw: object) -> ReplicaInfo:
    fields: dict[str, object] = {
        "exists": True,
        "managed_volume": VOL,
        "role": "replica",
        "epoch": 5,
        "snapshots": snaps,
        "label": "node2:tank/zflock/shop-db",
    }
    fields.update(kw)
    return ReplicaInfo(**fields)  # type: ignore[arg-type]


FORCE = PlanOptions(force_rollback=True)
NEWEST_ONLY = PlanOptions(intermediates=False)
RESUMABLE = PlanOptions(resume_supported=True)


# --- plan shapes -------------------------------------------------------------


def test_new_destination_gets_full_then_incremental_with_intermediates() -> None:
    plan = plan_replication(src(), ReplicaInfo(exists=False))
    assert plan.steps == (Full(S[0]), Incremental(S[0], S[4], intermediates=True))
    assert plan.adopt_destination
    assert not plan.receive_force and plan.rollback_to is None
    assert not plan.destroy_on_destination and not plan.up_to_date


def test_new_destination_newest_only_is_one_full_send() -> None:
    plan = plan_replication(src(), ReplicaInfo(exists=False), NEWEST_ONLY)
    assert plan.steps == (Full(S[4]),)


def test_new_destination_single_snapshot_is_one_full_send() -> None:
    plan = plan_replication(src(S[:1]), ReplicaInfo(exists=False))
    assert plan.steps == (Full(S[0]),)


def test_unsorted_input_is_sorted_by_order() -> None:
    plan = plan_replication(src(list(reversed(S))), ReplicaInfo(exists=False))
    assert plan.steps == (Full(S[0]), Incremental(S[0], S[4], intermediates=True))


def test_incremental_from_newest_common_snapshot() -> None:
    plan = plan_replication(src(), replica(on_dest(S[0], S[1], S[2])))
    assert plan.steps == (Incremental(S[2], S[4], intermediates=True),)
    assert plan.common_base == S[2]
    assert plan.rollback_to is None and not plan.receive_force
    assert not plan.adopt_destination and not plan.warnings
    assert "common base @s3" in plan.reason


def test_incremental_newest_only() -> None:
    plan = plan_replication(src(), replica(on_dest(S[0], S[1])), NEWEST_ONLY)
    assert plan.steps == (Incremental(S[1], S[4], intermediates=False),)


def test_gaps_on_destination_are_fine() -> None:
    # The replica got s1 and s4 only (e.g. sent with -i); s4 is the base.
    plan = plan_replication(src(), replica(on_dest(S[0], S[3])))
    assert plan.steps == (Incremental(S[3], S[4], intermediates=True),)


def test_replicas_newest_pruned_on_source_means_diverged() -> None:
    # The source pruned s3, the replica's newest. The newest common snapshot
    # is now s2 and the replica's s3 lies after it, absent from the source:
    # that is divergence. This is why pruning keeps every replica's base.
    source = src([S[0], S[1], S[3], S[4]])
    with pytest.raises(Diverged):
        plan_replication(source, replica(on_dest(S[0], S[1], S[2])))


def test_up_to_date_has_no_steps() -> None:
    plan = plan_replication(src(), replica(on_dest(*S)))
    assert plan.steps == ()
    assert plan.up_to_date
    assert plan.common_base == S[4]
    assert "already has the newest" in plan.reason


def test_up_to_date_even_if_destination_lacks_older_ones() -> None:
    plan = plan_replication(src(), replica(on_dest(S[4])))
    assert plan.up_to_date


def test_renamed_common_snapshot_uses_each_sides_name() -> None:
    # Matching is by GUID: the operator renamed s3 on the replica. The send
    # uses the source's name, a rollback uses the destination's.
    dest = [*on_dest(S[0], S[1]), SnapRef("renamed", S[2].guid, order=99)]
    plan = plan_replication(src(), replica(dest, modified_since_last_snapshot=True))
    assert plan.steps == (Incremental(S[2], S[4], intermediates=True),)
    assert plan.rollback_to is not None and plan.rollback_to.name == "renamed"


def test_modified_replica_is_rolled_back_with_a_loud_warning() -> None:
    dest = on_dest(S[0], S[1], S[2])
    plan = plan_replication(src(), replica(dest, modified_since_last_snapshot=True))
    assert plan.steps == (Incremental(S[2], S[4], intermediates=True),)
    assert plan.rollback_to == dest[2]
    assert plan.receive_force
    assert plan.destroy_on_destination == ()  # nothing destroyed, only changes dropped
    assert len(plan.warnings) == 1 and "someone touched it" in plan.warnings[0]


def test_modified_up_to_date_replica_is_rolled_back_without_steps() -> None:
    dest = on_dest(*S)
    plan = plan_replication(src(), replica(dest, modified_since_last_snapshot=True))
    assert plan.steps == ()
    assert plan.rollback_to == dest[4]
    assert not plan.receive_force  # no receive to force
    assert not plan.up_to_date


def test_force_rollback_destroys_destination_only_snapshots() -> None:
    extra = [SnapRef("oops", 900, order=50), SnapRef("oops2", 901, order=51)]
    dest = on_dest(S[0], S[1]) + extra
    plan = plan_replication(src(), replica(dest), FORCE)
    assert plan.destroy_on_destination == tuple(extra)
    assert plan.rollback_to == dest[1]
    assert plan.receive_force
    assert plan.steps == (Incremental(S[1], S[4], intermediates=True),)
    assert any("--force-rollback" in w and "@oops" in w for w in plan.warnings)


def test_force_rollback_when_source_has_nothing_new() -> None:
    dest = [*on_dest(*S), SnapRef("extra", 900, order=99)]
    plan = plan_replication(src(), replica(dest), FORCE)
    assert plan.steps == ()
    assert plan.destroy_on_destination == (dest[-1],)
    assert plan.rollback_to == dest[4]


def test_empty_replica_is_recreated() -> None:
    plan = plan_replication(src(), replica([]))
    assert plan.recreate_destination and plan.adopt_destination
    assert plan.steps == (Full(S[0]), Incremental(S[0], S[4], intermediates=True))
    assert not plan.warnings


def test_empty_written_replica_is_recreated_loudly() -> None:
    plan = plan_replication(src(), replica([], modified_since_last_snapshot=True))
    assert plan.recreate_destination
    assert plan.warnings and "someone touched it" in plan.warnings[0]


def test_replica_without_epoch_or_role_is_accepted() -> None:
    # Not completely stamped, but with a snapshot of its own: not rule 3's to adopt,
    # and still accepted as before (the operator allowed discarding it).
    dest = replica([*on_dest(S[0]), SnapRef("own", 900, order=99)], epoch=None, role=None)
    plan = plan_replication(src(), dest, FORCE)
    assert plan.steps == (Incremental(S[0], S[4], intermediates=True),)
    assert not plan.adopt_existing


# --- rule 3: our own first receive, completed but never stamped -------------


def test_unstamped_completed_first_receive_is_adopted_then_replanned() -> None:
    dest = ReplicaInfo(exists=True, snapshots=on_dest(S[0]))
    plan = plan_replication(Source(VOL, 5, S, volume_id="id-a"), dest)
    assert plan.adopt_existing and plan.replan_after and not plan.up_to_date
    assert plan.steps == () and plan.rollback_to is None and not plan.destroy_on_destination
    assert not plan.recreate_destination and not plan.receive_force
    assert "never stamped" in plan.reason


def test_half_stamped_first_receive_is_adopted() -> None:
    # zfs-fuse sets one property per command: a crash half-way leaves some of them.
    snaps = on_dest(S[0], S[1])
    for dest in (
        ReplicaInfo(exists=True, snapshots=snaps, managed_volume=VOL),
        ReplicaInfo(exists=True, snapshots=snaps, managed_volume=VOL, volume_id="id-a"),
        ReplicaInfo(exists=True, snapshots=snaps, role="replica", epoch=5),
    ):
        assert plan_replication(Source(VOL, 5, S, volume_id="id-a"), dest).adopt_existing


def test_adopted_then_planned_as_a_replica() -> None:
    stamped = replica(on_dest(S[0]), volume_id="id-a")
    plan = plan_replication(Source(VOL, 5, S, volume_id="id-a"), stamped)
    assert plan.steps == (Incremental(S[0], S[4], intermediates=True),)
    assert not plan.adopt_existing


@pytest.mark.parametrize(
    ("dest", "why"),
    [
        (ReplicaInfo(exists=True, snapshots=[*on_dest(S[0]), foreign("mine", 901)]), "own snap"),
        (ReplicaInfo(exists=True, snapshots=[foreign("mine", 901)]), "only its own"),
        (ReplicaInfo(exists=True), "no snapshot: nothing proves it ours"),
        (ReplicaInfo(exists=True, snapshots=on_dest(S[0]), managed_volume="x"), "other volume"),
        (ReplicaInfo(exists=True, snapshots=on_dest(S[0]), volume_id="id-b"), "other id"),
        (ReplicaInfo(exists=True, snapshots=on_dest(S[0]), role="primary"), "a primary"),
        (ReplicaInfo(exists=True, snapshots=on_dest(S[0]), epoch=6), "newer epoch"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_anything_else_unstamped_is_not_adopted(dest: ReplicaInfo, why: str) -> None:
    with pytest.raises(ReplicationConflict):
        plan_replication(Source(VOL, 5, S, volume_id="id-a"), dest)


def test_unstamped_with_a_token_is_the_interrupted_case_not_rule_3() -> None:
    dest = ReplicaInfo(
        exists=True, snapshots=on_dest(S[0]), resume_token="tok", resume_to_guid=S[1].guid
    )
    with pytest.raises(DestinationNotOurs):
        plan_replication(src(), dest, RESUMABLE)


def test_matching_volume_id_is_accepted() -> None:
    plan = plan_replication(Source(VOL, 5, S, volume_id="id-a"), replica([], volume_id="id-a"))
    assert plan.recreate_destination


def test_older_epoch_on_destination_is_fine() -> None:
    plan = plan_replication(src(epoch=9), replica(on_dest(S[0]), epoch=3))
    assert plan.steps


# --- resume ------------------------------------------------------------------


def test_resume_first_then_replan() -> None:
    dest = replica(on_dest(S[0], S[1]), resume_token="1-abc-def", resume_to_guid=S[2].guid)
    plan = plan_replication(src(), dest, RESUMABLE)
    assert plan.steps == (Resume("1-abc-def"),)
    assert plan.replan_after and not plan.abort_partial_receive and not plan.up_to_date


def test_resume_with_unknown_target_is_attempted() -> None:
    dest = replica(on_dest(S[0]), resume_token="tok")
    plan = plan_replication(src(), dest, RESUMABLE)
    assert plan.steps == (Resume("tok"),)


def test_token_without_resume_support_is_aborted() -> None:
    dest = replica(on_dest(S[0]), resume_token="tok", resume_to_guid=S[1].guid)
    plan = plan_replication(src(), dest)
    assert plan.abort_partial_receive and plan.replan_after and plan.steps == ()


def test_token_for_a_snapshot_the_source_pruned_is_aborted() -> None:
    dest = replica(on_dest(S[0]), resume_token="tok", resume_to_guid=777)
    plan = plan_replication(src(), dest, RESUMABLE)
    assert plan.abort_partial_receive and plan.steps == ()


def test_token_for_a_snapshot_already_received_is_aborted() -> None:
    dest = replica(on_dest(S[0], S[1]), resume_token="tok", resume_to_guid=S[1].guid)
    plan = plan_replication(src(), dest, RESUMABLE)
    assert plan.abort_partial_receive


def test_interrupted_initial_receive_is_ours_and_resumed() -> None:
    # Not stamped yet (no zflock:volume), but the token's target is our snapshot.
    dest = ReplicaInfo(exists=True, resume_token="tok", resume_to_guid=S[0].guid)
    plan = plan_replication(src(), dest, RESUMABLE)
    assert plan.steps == (Resume("tok"),)
    assert plan.adopt_destination and plan.replan_after


def test_interrupted_initial_receive_without_resume_support_is_aborted() -> None:
    dest = ReplicaInfo(exists=True, resume_token="tok", resume_to_guid=S[0].guid)
    plan = plan_replication(src(), dest)
    assert plan.abort_partial_receive and plan.replan_after


def test_token_on_a_stranger_dataset_is_not_touched() -> None:
    dest = ReplicaInfo(exists=True, resume_token="tok", resume_to_guid=4242)
    with pytest.raises(DestinationNotOurs):
        plan_replication(src(), dest, RESUMABLE)


def test_ownership_is_checked_before_resuming() -> None:
    dest = replica(on_dest(S[0]), epoch=6, resume_token="tok", resume_to_guid=S[1].guid)
    with pytest.raises(EpochNewerOnDestination):
        plan_replication(src(), dest, RESUMABLE)


# --- conflicts: one row per conflict ----------------------------------------

CONFLICTS: list[tuple[str, Source, ReplicaInfo, PlanOptions, type[ReplicationConflict], str]] = [
    (
        "source without snapshots",
        src([]),
        ReplicaInfo(exists=False),
        PlanOptions(),
        SourceHasNoSnapshots,
        "take a snapshot",
    ),
    (
        "plain dataset in the way",
        src(),
        ReplicaInfo(exists=True, snapshots=[*on_dest(S[0]), foreign("theirs", 901)]),
        FORCE,
        DestinationNotOurs,
        "not a zflock dataset",
    ),
    (
        "empty plain dataset in the way",
        src(),
        ReplicaInfo(exists=True),
        FORCE,
        DestinationNotOurs,
        "not a zflock dataset",
    ),
    (
        "replica of another volume",
        src(),
        replica(on_dest(S[0]), managed_volume="other-vol"),
        FORCE,
        DestinationNotOurs,
        "belongs to zflock volume 'other-vol'",
    ),
    (
        "same name, different volume id",
        Source(VOL, 5, S, volume_id="id-a"),
        replica(on_dest(S[0]), volume_id="id-b"),
        FORCE,
        DestinationNotOurs,
        "shares the name",
    ),
    (
        "volume id required but missing on destination",
        Source(VOL, 5, S, volume_id="id-a"),
        replica([*on_dest(S[0]), foreign("theirs", 901)]),
        FORCE,
        DestinationNotOurs,
        "with id None",
    ),
    (
        "destination is the primary",
        src(),
        replica(on_dest(S[0]), role="primary"),
        FORCE,
        DestinationIsPrimary,
        "demote it",
    ),
    (
        "destination epoch newer",
        src(epoch=5),
        replica(on_dest(S[0]), epoch=6),
        FORCE,
        EpochNewerOnDestination,
        "epoch 6, newer than",
    ),
    (
        "nothing shared",
        src(),
        replica([foreign("x", 901), foreign("y", 902)]),
        FORCE,
        NoCommonSnapshot,
        "shares no snapshot",
    ),
    (
        "same names, different GUIDs",
        src(),
        replica([SnapRef(s.name, s.guid + 1000, s.order) for s in S]),
        FORCE,
        NoCommonSnapshot,
        "matched by GUID",
    ),
    (
        "destination snapshot after the base",
        src(),
        replica([*on_dest(S[0], S[1]), SnapRef("local", 900, order=99)]),
        PlanOptions(),
        Diverged,
        "--force-rollback",
    ),
    (
        "name reused after the base",
        src(),
        replica([*on_dest(S[0], S[1]), SnapRef("s3", 900, order=99)]),
        PlanOptions(),
        Diverged,
        "@s3 (guid 900)",
    ),
    (
        "old destination-only snapshot holds an incoming name",
        src(),
        replica([SnapRef("s4", 900, order=1), *on_dest(S[0], S[1], start=5)]),
        PlanOptions(),
        SnapshotNameTaken,
        "@s4 (guid 900)",
    ),
]


@pytest.mark.parametrize(
    ("source", "dest", "options", "conflict", "fragment"),
    [row[1:] for row in CONFLICTS],
    ids=[row[0] for row in CONFLICTS],
)
def test_conflict(
    source: Source,
    dest: ReplicaInfo,
    options: PlanOptions,
    conflict: type[ReplicationConflict],
    fragment: str,
) -> None:
    with pytest.raises(conflict) as info:
        plan_replication(source, dest, options)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message  # one line for the CLI
    assert isinstance(info.value, ZflockError)


def test_diverged_carries_the_details() -> None:
    local = SnapRef("local", 900, order=99)
    with pytest.raises(Diverged) as info:
        plan_replication(src(), replica([*on_dest(S[0], S[1]), local]))
    assert info.value.common_base == S[1]
    assert info.value.destination_only == (local,)
    assert info.value.source_only == tuple(S[2:])


def test_diverged_message_lists_a_few_and_counts_the_rest() -> None:
    extra = [SnapRef(f"x{i}", 900 + i, order=100 + i) for i in range(6)]
    with pytest.raises(Diverged) as info:
        plan_replication(src(), replica(on_dest(S[0]) + extra))
    assert "6 snapshots" in str(info.value) and "and 3 more" in str(info.value)


def test_diverged_even_when_source_has_nothing_new() -> None:
    with pytest.raises(Diverged):
        plan_replication(src(), replica([*on_dest(*S), SnapRef("x", 900, order=99)]))


def test_name_taken_is_resolved_by_force() -> None:
    squatter = SnapRef("s4", 900, order=1)
    dest = [squatter, *on_dest(S[0], S[1], start=5)]
    plan = plan_replication(src(), replica(dest), FORCE)
    assert plan.destroy_on_destination == (squatter,)
    assert plan.rollback_to is None  # nothing after the base: no rollback needed


def test_name_taken_not_a_problem_when_that_snapshot_is_not_sent() -> None:
    # With intermediates off only s5 is received; an old "s4" is harmless.
    dest = [SnapRef("s4", 900, order=1), *on_dest(S[0], S[1], start=5)]
    plan = plan_replication(src(), replica(dest), NEWEST_ONLY)
    assert plan.steps == (Incremental(S[1], S[4], intermediates=False),)


def test_name_taken_by_the_base_itself_is_never_forced() -> None:
    # The replica's base was renamed to the name of an incoming snapshot.
    dest = [*on_dest(S[0]), SnapRef("s5", S[1].guid, order=50)]
    with pytest.raises(SnapshotNameTaken):
        plan_replication(src(), replica(dest), FORCE)


def test_destination_is_primary_is_a_destination_not_ours() -> None:
    with pytest.raises(DestinationNotOurs):
        plan_replication(src(), replica(on_dest(S[0]), role="primary"))


def test_duplicate_guid_on_one_side_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        plan_replication(src([S[0], SnapRef("again", S[0].guid, 99)]), ReplicaInfo(False))


def test_plan_is_hashable_and_lists_are_frozen() -> None:
    snaps = list(S)
    source = src(snaps)
    snaps.clear()
    assert len(source.snapshots) == 5
    plan = plan_replication(source, ReplicaInfo(exists=False))
    assert isinstance(hash(plan), int)
    assert isinstance(plan, Plan)


def test_diff_reports_both_sides() -> None:
    dest = [*on_dest(S[0], S[1]), SnapRef("local", 900, order=99)]
    d = diff(S, dest)
    assert d.source_base == S[1] and d.destination_base == dest[1]
    assert d.source_after_base == tuple(S[2:])
    assert d.destination_after_base == (dest[2],)
    assert d.has_common and d.destination_base_index == 1
    none = diff(S, [foreign("a", 1)])
    assert not none.has_common and none.destination_base_index == -1
