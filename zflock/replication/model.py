"""Plain data the replication planner works on (pure, no I/O).

The executor converts what it lists from ZFS (`zflock.zfs` types) into these,
so the planner stays independent of how snapshots are listed and can be
tested over generated histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The planner refuses to receive into a dataset whose `zflock:role` is
# primary: only replicas are ever overwritten.
from zflock.cluster.ownership import ROLE_PRIMARY, ROLE_REPLICA

__all__ = [
    "ROLE_PRIMARY",
    "ROLE_REPLICA",
    "Full",
    "Incremental",
    "Plan",
    "PlanOptions",
    "ReplicaInfo",
    "Resume",
    "SnapRef",
    "Source",
    "Step",
]


@dataclass(frozen=True)
class SnapRef:
    """One snapshot of one dataset.

    `name` is the short name after '@'. `guid` identifies the snapshot's
    content across pools: a received snapshot keeps the sender's GUID, so
    two sides share a snapshot exactly when they share its GUID (a name can
    be reused for different content). `order` is `createtxg`, or the listing
    index where the ZFS lacks it; it orders snapshots within ONE dataset and
    is never compared across the two sides. `size` is informational (for
    progress); None where unknown.
    """

    name: str
    guid: int
    order: int
    size: int | None = None

    def describe(self) -> str:
        return f"@{self.name} (guid {self.guid})"


def _freeze_snapshots(obj: Source | ReplicaInfo) -> None:
    # Callers naturally pass lists; keep the dataclass hashable and immutable.
    object.__setattr__(obj, "snapshots", tuple(obj.snapshots))


@dataclass(frozen=True)
class Source:
    """The sending side: the volume's current primary (or the copy we send from)."""

    volume: str  # zflock:volume
    epoch: int  # zflock:epoch
    snapshots: Sequence[SnapRef] = ()  # oldest -> newest; stored as a tuple
    label: str = "source"  # for messages, e.g. "node1:tank/zflock/shop-db"
    # zflock:id. When given, a destination must carry the same id: two volumes
    # that happen to share a name are never copies of each other.
    volume_id: str | None = None

    def __post_init__(self) -> None:
        _freeze_snapshots(self)


@dataclass(frozen=True)
class ReplicaInfo:
    """What the executor found at the destination dataset.

    `managed_volume` is the value of `zflock:volume` (None when the property
    is not set, i.e. not a zflock dataset). `modified_since_last_snapshot`
    is a hint (from `written`, or from a receive that failed with
    "destination has been modified"): a stale False only makes a receive
    fail, after which the executor sets it and plans again.
    `resume_to_guid` is the GUID of the snapshot the resume token would
    complete, when the executor could decode the token (None if unknown).
    """

    exists: bool
    managed_volume: str | None = None
    volume_id: str | None = None  # zflock:id
    role: str | None = None
    epoch: int | None = None
    modified_since_last_snapshot: bool = False
    resume_token: str | None = None
    resume_to_guid: int | None = None
    snapshots: Sequence[SnapRef] = ()  # oldest -> newest; stored as a tuple
    label: str = "destination"  # for messages, e.g. "node2:tank/zflock/shop-db"

    def __post_init__(self) -> None:
        _freeze_snapshots(self)


@dataclass(frozen=True)
class PlanOptions:
    """What the operator allowed and what both ZFS sides can do."""

    # Allow destroying destination snapshots the source does not have.
    force_rollback: bool = False
    # Both sides support `receive -s` / `send -t` (zfs-fuse does not).
    resume_supported: bool = False
    # True: the destination gets every source snapshot (`send -I`);
    # False: only the newest (`send -i`, or a full send of the newest).
    intermediates: bool = True


@dataclass(frozen=True)
class Full:
    """`zfs send <to>` into a destination that does not exist (yet)."""

    to: SnapRef


@dataclass(frozen=True)
class Incremental:
    """`zfs send -I|-i <base> <to>`; `base` is on both sides (same GUID)."""

    base: SnapRef
    to: SnapRef
    intermediates: bool


@dataclass(frozen=True)
class Resume:
    """`zfs send -t <token> | zfs receive -s`: finish the interrupted stream."""

    token: str


Step = Full | Incremental | Resume


@dataclass(frozen=True)
class Plan:
    """What the executor does, in this order (see docs/replication-planning.md).

    0. `adopt_existing`: stamp the destination as a read-only, unmounted replica
       (readonly first): it is our own completed first receive that was never
       stamped (rule 3). The receiver checks that from its own state again.
    1. `abort_partial_receive`: `zfs receive -A <dest>` (discard the partial
       state of an interrupted stream that cannot be resumed).
    2. `recreate_destination`: `zfs destroy <dest>` WITHOUT -r (it is an empty
       zflock replica; ZFS itself refuses if a snapshot appeared meanwhile).
    3. `destroy_on_destination`: destroy each listed snapshot, after checking
       its GUID still matches (only ever non-empty under --force-rollback).
    4. `rollback_to`: `zfs rollback <dest>@<base>` WITHOUT -r (everything after
       the base was destroyed in 3, so ZFS refuses if anything else appeared).
    5. `steps`, in order. `receive_force` applies to the first receive only
       (`zfs receive -F`): it is set exactly when a rollback was authorized,
       so -F can only discard what this plan already allowed.
    6. `adopt_destination`: right after the first receive lands, stamp the new
       dataset as a replica (`zflock:volume`, `zflock:role`, `zflock:epoch`).
    7. `replan_after`: list both sides again and plan again (after a Resume or
       an abort, the destination's state is only known by looking).

    `warnings` must be logged loudly: each means someone touched a replica.
    """

    steps: tuple[Step, ...] = ()
    adopt_existing: bool = False
    common_base: SnapRef | None = None
    rollback_to: SnapRef | None = None
    receive_force: bool = False
    destroy_on_destination: tuple[SnapRef, ...] = ()
    recreate_destination: bool = False
    adopt_destination: bool = False
    abort_partial_receive: bool = False
    replan_after: bool = False
    warnings: tuple[str, ...] = ()
    reason: str = ""

    @property
    def up_to_date(self) -> bool:
        """Nothing at all to do: the destination already matches the source."""
        return not (
            self.steps
            or self.adopt_existing
            or self.rollback_to
            or self.destroy_on_destination
            or self.recreate_destination
            or self.abort_partial_receive
            or self.replan_after
        )
