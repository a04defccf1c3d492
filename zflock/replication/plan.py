"""The replication planner (pure, no I/O).

Two snapshot histories, what we know about the destination dataset and the
operator's options in; a `Plan` out, or a `ReplicationConflict` raised. The
rules, numbered and in the order they are checked, exactly as the table in
docs/replication-planning.md (which explains them for operators):

1. The source has no snapshot: `SourceHasNoSnapshots`.
2. The destination does not exist: a full send (plus an incremental `-I` to
   the newest when intermediates are wanted).
3. Our own first receive, completed but never (or not completely) stamped:
   adopt it (stamp it a read-only replica), then plan again. Proof that it is
   ours: no resume token, at least one snapshot and every one of them the
   source's by GUID, and whatever zflock properties it has agree with the
   source. (An *interrupted* first receive, which holds a token instead, is
   the exception handled under 7.)
4. Otherwise it must be a zflock copy of the same volume (name and id):
   `DestinationNotOurs`.
5. ... and not a primary: `DestinationIsPrimary`.
6. ... at an epoch not newer than the source's: `EpochNewerOnDestination`.
7. A resume token is dealt with first: resume it, or abort it when it cannot
   be resumed; then the executor plans again from the new state.
8. An empty replica (no snapshots) is destroyed and sent in full.
9. Otherwise the newest common snapshot by GUID is the incremental base; with
   none, `NoCommonSnapshot`.
10. Destination snapshots after it (the source lacks them): `Diverged`, unless
    --force-rollback.
11. A kept destination-only snapshot with the name of one to be received:
    `SnapshotNameTaken`, unless --force-rollback.
12. Changes after the newest snapshot (no snapshot of their own) are rolled
    back to the base always, with a loud warning: a replica must never change.
13. Otherwise: an incremental from the base to the newest, or up to date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from zflock.replication.conflicts import (
    DestinationIsPrimary,
    DestinationNotOurs,
    Diverged,
    EpochNewerOnDestination,
    NoCommonSnapshot,
    ReplicationConflict,
    SnapshotNameTaken,
    SourceHasNoSnapshots,
)
from zflock.replication.history import SnapshotDiff, diff, sort_history
from zflock.replication.model import (
    ROLE_PRIMARY,
    ROLE_REPLICA,
    Full,
    Incremental,
    Plan,
    PlanOptions,
    ReplicaInfo,
    Resume,
    SnapRef,
    Source,
    Step,
)

# The planner's whole vocabulary, so callers need one import.
__all__ = [
    "ROLE_PRIMARY",
    "ROLE_REPLICA",
    "DestinationIsPrimary",
    "DestinationNotOurs",
    "Diverged",
    "EpochNewerOnDestination",
    "Full",
    "Incremental",
    "NoCommonSnapshot",
    "Plan",
    "PlanOptions",
    "ReplicaInfo",
    "ReplicationConflict",
    "Resume",
    "SnapRef",
    "SnapshotDiff",
    "SnapshotNameTaken",
    "Source",
    "SourceHasNoSnapshots",
    "Step",
    "diff",
    "is_unstamped_first_receive",
    "plan_replication",
    "with_pending_snapshot",
]


def with_pending_snapshot(source: Source) -> Source:
    """The source as it will be once a job has taken its snapshot: planning this first
    finds a conflict before anything changes (a refused job leaves both sides as they were)."""
    order = max((s.order for s in source.snapshots), default=0) + 1
    # GUID 0 is never a real snapshot's, so it matches nothing on the destination.
    pending = SnapRef(name="zflock-pending", guid=0, order=order)
    return replace(source, snapshots=[*source.snapshots, pending])


def plan_replication(
    source: Source, destination: ReplicaInfo, options: PlanOptions | None = None
) -> Plan:
    """Plan how to bring `destination` up to the source's newest snapshot.

    Raises a ReplicationConflict subclass when that cannot be done safely.
    """
    opts = options if options is not None else PlanOptions()
    src = sort_history(source.snapshots, source.label)
    if not src:  # rule 1
        raise SourceHasNoSnapshots(source.label)

    if not destination.exists:  # rule 2
        return Plan(
            steps=_initial_steps(src, opts),
            adopt_destination=True,
            reason=f"{destination.label} does not exist: {_describe_initial(src, opts)}",
        )

    dst = sort_history(destination.snapshots, destination.label)
    if is_unstamped_first_receive(source, destination):  # rule 3
        return Plan(
            adopt_existing=True,
            replan_after=True,
            reason=f"{destination.label} is our own first receive of {source.volume!r} "
            "that was never stamped (all its snapshots are the source's, by GUID): adopting "
            "it as a read-only replica, then planning again",
        )
    if _is_our_interrupted_initial_receive(src, destination):  # the exception to rule 4
        return _plan_token(src, dst, destination, opts, adopt=True)

    _check_ownership(source, destination)  # rules 4, 5, 6
    if destination.resume_token is not None:  # rule 7
        return _plan_token(src, dst, destination, opts, adopt=False)

    if not dst:  # rule 8
        return _plan_recreate(src, destination, opts)

    return _plan_incremental(source, destination, diff(src, dst), opts)  # rules 9-13


def _initial_steps(src: Sequence[SnapRef], opts: PlanOptions) -> tuple[Step, ...]:
    newest = src[-1]
    if opts.intermediates and len(src) > 1:
        # The full stream carries the oldest snapshot; one -I stream then
        # brings every later one, so the replica gets the whole history.
        return (Full(src[0]), Incremental(src[0], newest, intermediates=True))
    return (Full(newest),)


def _describe_initial(src: Sequence[SnapRef], opts: PlanOptions) -> str:
    if opts.intermediates and len(src) > 1:
        return (
            f"full send of {src[0].describe()}, then incremental to "
            f"{src[-1].describe()} with {len(src) - 2} intermediate snapshot(s)"
        )
    return f"full send of {src[-1].describe()}"


def is_unstamped_first_receive(source: Source, dest: ReplicaInfo) -> bool:
    """Rule 3: our own first receive, completed, but the executor stopped (crashed)
    before it stamped the dataset, or half-way through stamping it (zfs-fuse sets
    one property per command).

    The proof that it is ours and holds nothing else: no resume token, at least
    one snapshot and every one of them the source's (by GUID: no snapshot of its
    own, no other history), and every zflock property it does have agrees with
    the source. The receiver applies this same test to its own state before it
    stamps anything; a dataset failing it stays `DestinationNotOurs` (never touch
    what is not ours).
    """
    stamped = (
        dest.managed_volume is not None
        and (dest.volume_id is not None or source.volume_id is None)
        and dest.role is not None
        and dest.epoch is not None
    )
    if stamped or dest.resume_token is not None or not dest.snapshots:
        return False
    agrees = (
        dest.managed_volume in (None, source.volume)
        and dest.volume_id in (None, source.volume_id)
        and dest.role in (None, ROLE_REPLICA)
        and (dest.epoch is None or dest.epoch <= source.epoch)
    )
    source_guids = {s.guid for s in source.snapshots}
    return agrees and all(d.guid in source_guids for d in dest.snapshots)


def _is_our_interrupted_initial_receive(src: Sequence[SnapRef], dest: ReplicaInfo) -> bool:
    """An interrupted resumable full receive: the dataset exists, but the executor
    had no chance to stamp it yet. The token naming a GUID the source has is the
    proof that the partial stream came from this volume.
    """
    return (
        dest.managed_volume is None
        and not dest.snapshots
        and dest.resume_token is not None
        and dest.resume_to_guid is not None
        and any(s.guid == dest.resume_to_guid for s in src)
    )


def _check_ownership(source: Source, dest: ReplicaInfo) -> None:
    if dest.managed_volume != source.volume:
        raise DestinationNotOurs(dest.label, source.volume, dest.managed_volume)
    if source.volume_id is not None and dest.volume_id != source.volume_id:
        raise DestinationNotOurs(
            dest.label,
            source.volume,
            dest.managed_volume,
            message=f"destination {dest.label} is a zflock volume named {source.volume!r} but "
            f"with id {dest.volume_id}, not {source.volume_id}: a different volume that shares "
            "the name; zflock will not overwrite it: move it away or pick another node",
        )
    if dest.role == ROLE_PRIMARY:
        raise DestinationIsPrimary(dest.label, source.volume, dest.epoch)
    # A replica without an epoch has not been stamped fully yet; it cannot
    # have seen a newer primary, so it does not block (see the docs).
    if dest.epoch is not None and dest.epoch > source.epoch:
        raise EpochNewerOnDestination(source.label, source.epoch, dest.label, dest.epoch)


def _plan_token(
    src: Sequence[SnapRef],
    dst: Sequence[SnapRef],
    dest: ReplicaInfo,
    opts: PlanOptions,
    *,
    adopt: bool,
) -> Plan:
    """Resume the interrupted stream, or discard it when it cannot finish.

    Either way the destination's state afterwards is only known by listing it
    again, so the plan asks for a replan instead of guessing what lands.
    """
    token = dest.resume_token
    if token is None:  # callers check first; keeps the type exact without assert
        raise ValueError("_plan_token needs a resume token")
    target = dest.resume_to_guid
    why_not: str | None = None
    if not opts.resume_supported:
        why_not = "resumable send/receive is not supported on both sides"
    elif target is not None and not any(s.guid == target for s in src):
        why_not = f"its target snapshot (guid {target}) is no longer on the source"
    elif target is not None and any(d.guid == target for d in dst):
        why_not = f"its target snapshot (guid {target}) is already on the destination"
    if why_not is not None:
        return Plan(
            abort_partial_receive=True,
            replan_after=True,
            reason=f"{dest.label} holds a partial receive that cannot be resumed ({why_not}): "
            "aborting it, then planning again",
        )
    return Plan(
        steps=(Resume(token),),
        adopt_destination=adopt,
        replan_after=True,
        reason=f"{dest.label} holds an interrupted stream: resuming it, then planning again",
    )


def _plan_recreate(src: Sequence[SnapRef], dest: ReplicaInfo, opts: PlanOptions) -> Plan:
    """An empty zflock replica: no snapshot means no base, and nothing to keep.

    A full receive into an existing dataset would need -F; destroying the empty
    replica (without -r) is explicit, and ZFS refuses it if a snapshot appears.
    """
    warnings: tuple[str, ...] = ()
    if dest.modified_since_last_snapshot:
        warnings = (
            f"replica {dest.label} has no snapshots but was written to; a replica must never "
            "change, so someone touched it: destroying it and sending it again in full",
        )
    return Plan(
        steps=_initial_steps(src, opts),
        recreate_destination=True,
        adopt_destination=True,
        warnings=warnings,
        reason=f"{dest.label} is an empty replica: destroying it, then "
        f"{_describe_initial(src, opts)}",
    )


def _plan_incremental(
    source: Source, dest: ReplicaInfo, d: SnapshotDiff, opts: PlanOptions
) -> Plan:
    if d.source_base is None or d.destination_base is None:  # rule 9
        raise NoCommonSnapshot(source.label, dest.label, d.source, d.destination)
    base, dest_base = d.source_base, d.destination_base

    dest_after = d.destination_after_base
    if dest_after and not opts.force_rollback:  # rule 10
        raise Diverged(source.label, dest.label, base, dest_after, d.source_after_base)

    newest = d.source[-1]
    to_receive = d.source_after_base if opts.intermediates else d.source_after_base[-1:]
    steps: tuple[Step, ...] = ()
    if to_receive:
        steps = (Incremental(base, newest, intermediates=opts.intermediates),)

    # A snapshot kept on the destination (up to the base) whose name a received
    # snapshot needs would make the receive fail half-way; settle it now.
    incoming = {s.name for s in to_receive}
    kept = d.destination[: d.destination_base_index + 1]
    taken = tuple(s for s in kept if s.name in incoming)
    if taken and (not opts.force_rollback or dest_base in taken):  # rule 11
        raise SnapshotNameTaken(dest.label, taken)

    warnings: list[str] = []
    if dest_after:
        warnings.append(
            f"--force-rollback: destroying {len(dest_after)} snapshot(s) on {dest.label} "
            f"after the common base {dest_base.describe()} that {source.label} lacks: "
            + ", ".join(s.describe() for s in dest_after)
        )
    if taken:
        warnings.append(
            f"--force-rollback: destroying snapshot(s) on {dest.label} whose names the "
            "source's snapshots need: " + ", ".join(s.describe() for s in taken)
        )
    if dest.modified_since_last_snapshot:  # rule 12
        warnings.append(
            f"replica {dest.label} was written to after its newest snapshot; a replica "
            "must never change, so someone touched it: rolling it back to "
            f"{dest_base.describe()}"
        )

    rollback_to = dest_base if (dest_after or dest.modified_since_last_snapshot) else None
    plan = Plan(
        steps=steps,
        common_base=base,
        rollback_to=rollback_to,
        receive_force=rollback_to is not None and bool(steps),
        destroy_on_destination=taken + dest_after,
        warnings=tuple(warnings),
    )
    return _with_reason(plan, dest, base, newest, len(to_receive))


def _with_reason(plan: Plan, dest: ReplicaInfo, base: SnapRef, newest: SnapRef, n: int) -> Plan:
    if not plan.steps:
        action = f"{dest.label} already has the newest snapshot {newest.describe()}"
        if not plan.up_to_date:
            action += ", after cleaning up the replica"
    else:
        action = (
            f"incremental from the common base {base.describe()} to {newest.describe()} "
            f"({n} snapshot(s) to receive)"
        )
    return replace(plan, reason=action)
