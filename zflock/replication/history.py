"""Compare two snapshot histories by GUID (pure).

The idea follows zrepl's `IncrementalPath`: walk both histories and find the
newest snapshot they share. Shared means the same GUID, never the same name,
because a name can be reused for different content (an operator destroys
`@daily` and takes a new `@daily`) while a received snapshot always keeps the
sender's GUID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from zflock.replication.model import Incremental, Plan, ReplicaInfo, SnapRef, Source


def sort_history(snapshots: Sequence[SnapRef], side: str) -> tuple[SnapRef, ...]:
    """Snapshots oldest -> newest by `order`, checking GUIDs are unique.

    Callers are asked for sorted lists already; sorting again (stable) costs
    nothing and means a caller's mistake cannot pick the wrong base. A GUID
    listed twice on one side cannot come from ZFS, so it is a bug upstream.
    """
    ordered = tuple(sorted(snapshots, key=lambda s: s.order))
    seen: set[int] = set()
    for snap in ordered:
        if snap.guid in seen:
            raise ValueError(f"{side}: snapshot guid {snap.guid} listed twice")
        seen.add(snap.guid)
    return ordered


@dataclass(frozen=True)
class SnapshotDiff:
    """How a destination's history relates to the source's.

    `source_base` and `destination_base` are the same snapshot (same GUID)
    as each side lists it: the names can differ if an operator renamed one,
    and each side's commands must use its own name.
    """

    source: tuple[SnapRef, ...]
    destination: tuple[SnapRef, ...]
    source_base: SnapRef | None
    destination_base: SnapRef | None
    # Source snapshots newer than the base (everything if there is no base).
    source_after_base: tuple[SnapRef, ...]
    # Destination snapshots newer than the base: none of them is on the source.
    destination_after_base: tuple[SnapRef, ...]

    @property
    def has_common(self) -> bool:
        return self.source_base is not None

    @property
    def destination_base_index(self) -> int:
        """Index of the base in `destination` (-1 without a base)."""
        if self.destination_base is None:
            return -1
        return self.destination.index(self.destination_base)


def diff(source: Sequence[SnapRef], destination: Sequence[SnapRef]) -> SnapshotDiff:
    """Find the newest common snapshot (by GUID) and what lies after it on each side."""
    src = sort_history(source, "source")
    dst = sort_history(destination, "destination")
    src_index = {s.guid: i for i, s in enumerate(src)}
    # The newest destination snapshot the source also has. Received snapshots
    # keep their relative order, so "newest on the destination" and "newest on
    # the source" name the same snapshot; the destination's order decides what
    # lies after it there, which is what a receive would have to discard.
    for d_idx in range(len(dst) - 1, -1, -1):
        s_idx = src_index.get(dst[d_idx].guid)
        if s_idx is not None:
            return SnapshotDiff(
                source=src,
                destination=dst,
                source_base=src[s_idx],
                destination_base=dst[d_idx],
                source_after_base=src[s_idx + 1 :],
                destination_after_base=dst[d_idx + 1 :],
            )
    return SnapshotDiff(
        source=src,
        destination=dst,
        source_base=None,
        destination_base=None,
        source_after_base=src,
        destination_after_base=dst,
    )


def after_plain_steps(destination: ReplicaInfo, source: Source, plan: Plan) -> ReplicaInfo | None:
    """The destination once every step of `plan` landed, as the plan alone tells it;
    None where it cannot say exactly: a plan that cleans up, forces a receive, adopts,
    or streams anything but an incremental onto the destination's newest snapshot.

    For a replication cycle's prune (pruning.prune_after_sync), so that it need not
    ask the replica to walk its snapshots again right after the receive. A plain
    incremental receive (no -F) destroys nothing and adds, after the destination's
    newest, exactly the source's snapshots after the base up to `to` (`-I`), or `to`
    alone (`-i`). The `order` of an added snapshot is made up (after the newest):
    order is only compared within one side, and the receiver decides its own pruning
    from its own listing anyway, so a wrong guess here only keeps more.
    """
    if (
        not destination.exists
        or not destination.snapshots
        or destination.resume_token
        or plan.steps == ()
        or plan.adopt_existing
        or plan.rollback_to is not None
        or plan.receive_force
        or plan.destroy_on_destination
        or plan.recreate_destination
        or plan.abort_partial_receive
        or plan.replan_after
    ):
        return None
    ordered = sort_history(source.snapshots, "source")
    at = {s.guid: i for i, s in enumerate(ordered)}
    added: list[SnapRef] = []
    newest = sort_history(destination.snapshots, "destination")[-1]
    for step in plan.steps:
        if not isinstance(step, Incremental) or step.base.guid != (added or [newest])[-1].guid:
            return None
        start, end = at.get(step.base.guid), at.get(step.to.guid)
        if start is None or end is None or end <= start:
            return None  # not a plan made from this source: ask
        added.extend(ordered[start + 1 : end + 1] if step.intermediates else [ordered[end]])
    last = newest.order
    made_up = [replace(s, order=last + i + 1) for i, s in enumerate(added)]
    return replace(destination, snapshots=(*destination.snapshots, *made_up))
