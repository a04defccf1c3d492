"""What a receiver admits (pure): every discarding step a peer asks for, checked
against the receiver's own state.

A peer's plan is a request, not an order: its view of this node may be stale
(the replica changed since it listed it) and its code may be wrong. Before it
adopts a dataset, destroys a snapshot, rolls back, destroys an empty replica
or receives with `-F`, the receiving agent lists its own dataset (holding its
volume lock) and asks these functions; a step they refuse raises
`NotAdmitted` and nothing is changed. The rules are invariant 4 of the design
(docs/replication-planning.md, "What a receiver admits"):

- adopt only our own unstamped first receive (planner rule 3, applied to the
  receiver's own state);
- destroy a snapshot only if the source lacks it (by GUID), and only with the
  operator's --force-rollback: never common history, never without consent,
  and never a `zflock-diverged-*` snapshot (only `zflock rejoin` handles those);
- roll back only to a snapshot the source has, and only once nothing is left
  after it, so a rollback discards at most the writes made after the newest
  snapshot, which a replica may always lose (rule 12);
- destroy the dataset (recreate) only when it has no snapshot;
- `receive -F` only for an incremental whose base is the newest snapshot, so
  that -F, too, can discard only writes made after it (with an older base,
  ZFS's -F destroys the later snapshots).

The source's snapshots come from the sender (it is the authority on what it
has); everything about the destination comes from the destination itself.
"""

from __future__ import annotations

from zflock.cluster.lease import is_diverged
from zflock.replication.conflicts import ReplicationConflict
from zflock.replication.endpoint import Cleanup, StepHeader
from zflock.replication.history import sort_history
from zflock.replication.model import ReplicaInfo, SnapRef, Source
from zflock.replication.plan import is_unstamped_first_receive


class NotAdmitted(ReplicationConflict):
    """The receiver's own rules do not allow a step the peer asked for."""


def admit_cleanup(source: Source, dest: ReplicaInfo, cleanup: Cleanup) -> None:
    """Raise NotAdmitted unless every item of `cleanup` is allowed on `dest` as it is now."""
    if cleanup.adopt and not is_unstamped_first_receive(source, dest):
        raise NotAdmitted(
            f"refusing to adopt {dest.label}: it is not an unstamped first receive of "
            f"{source.volume!r} (a dataset without complete zflock properties whose snapshots "
            "are all the source's)"
        )
    snaps = sort_history(dest.snapshots, dest.label)
    if cleanup.recreate and snaps:
        raise NotAdmitted(f"refusing to destroy {dest.label}: it has {len(snaps)} snapshot(s)")
    source_guids = {s.guid for s in source.snapshots}
    by_guid = {s.guid: s for s in snaps}
    doomed: set[int] = set()
    for ref in cleanup.destroy_snapshots:
        snap = _here(by_guid, ref, dest.label)
        if snap.guid in source_guids:
            raise NotAdmitted(
                f"refusing to destroy {dest.label}@{snap.name} (guid {snap.guid}): the source "
                "has it too, so it is common history, never discarded"
            )
        if is_diverged(snap.name):
            # A returning primary's writes the cluster never saw (docs/failover.md): only
            # `zflock rejoin`, which keeps them first or is told to discard them.
            raise NotAdmitted(
                f"refusing to destroy {dest.label}@{snap.name}: it keeps writes made after a "
                "failover; run zflock rejoin (it keeps them first; --discard-diverged drops them)"
            )
        if not cleanup.force_rollback:
            raise NotAdmitted(
                f"refusing to destroy {dest.label}@{snap.name} (guid {snap.guid}), a snapshot "
                "of the replica's own: only --force-rollback discards those"
            )
        doomed.add(snap.guid)
    if cleanup.rollback_to is not None:
        target = _here(by_guid, cleanup.rollback_to, dest.label)
        if target.guid not in source_guids:
            raise NotAdmitted(
                f"refusing to roll {dest.label} back to @{target.name}: the source lacks it, "
                "so it cannot be an incremental base"
            )
        after = [s for s in snaps[snaps.index(target) + 1 :] if s.guid not in doomed]
        if after:
            raise NotAdmitted(
                f"refusing to roll {dest.label} back to @{target.name}: it would discard "
                f"{len(after)} later snapshot(s), e.g. @{after[0].name}"
            )


def admit_receive(dest: ReplicaInfo, header: StepHeader) -> None:
    """Raise NotAdmitted if `header` asks for `receive -F` that could discard a snapshot."""
    if not header.force:
        return
    if header.kind != "incremental" or header.base is None:
        raise NotAdmitted(f"refusing `receive -F` of a {header.kind} stream into {dest.label}")
    snaps = sort_history(dest.snapshots, dest.label)
    newest = snaps[-1] if snaps else None
    if newest is None or newest.guid != header.base.guid:
        raise NotAdmitted(
            f"refusing `receive -F` into {dest.label}: its base @{header.base.name} (guid "
            f"{header.base.guid}) is not the newest snapshot there "
            f"({'none' if newest is None else '@' + newest.name}), so -F would destroy the "
            "snapshots after it"
        )


def _here(by_guid: dict[int, SnapRef], ref: SnapRef, label: str) -> SnapRef:
    snap = by_guid.get(ref.guid)
    if snap is None:
        raise NotAdmitted(f"{label} has no snapshot with guid {ref.guid} (@{ref.name})")
    return snap
