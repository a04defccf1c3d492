"""Why the planner refuses to replicate (typed, one-line operator messages).

Each conflict is a situation where sending now could lose or fork data, so
zflock stops and says what it found and what the operator can do. They all
derive from ZflockError: the CLI prints the message as one line, exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from zflock.errors import ZflockError
from zflock.replication.model import SnapRef

# How many snapshots a message names before it says "and N more": messages
# stay one readable line even for a replica with hundreds of extra snapshots.
_LISTED = 3


def _listing(snaps: Sequence[SnapRef]) -> str:
    shown = ", ".join(s.describe() for s in snaps[:_LISTED])
    if len(snaps) > _LISTED:
        shown += f" and {len(snaps) - _LISTED} more"
    return shown


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


class ReplicationConflict(ZflockError):
    """The planner refuses: replicating now could lose or fork data."""


class SourceHasNoSnapshots(ReplicationConflict):
    """There is nothing to send: the source has no snapshot at all."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(
            f"{source} has no snapshots, so there is nothing to replicate; "
            "take a snapshot of it first"
        )


class DestinationNotOurs(ReplicationConflict):
    """The destination dataset exists but is not a zflock replica of this volume."""

    def __init__(
        self,
        destination: str,
        volume: str,
        found_volume: str | None,
        message: str | None = None,
    ) -> None:
        self.destination = destination
        self.volume = volume
        self.found_volume = found_volume
        if message is None:
            what = (
                "is not a zflock dataset (no zflock:volume property)"
                if found_volume is None
                else f"belongs to zflock volume {found_volume!r}"
            )
            message = (
                f"destination {destination} already exists and {what}, not a replica of "
                f"{volume!r}; zflock will not overwrite it: move it away or pick another node"
            )
        super().__init__(message)


class DestinationIsPrimary(DestinationNotOurs):
    """The destination is a primary (writable copy), never overwritten by a receive."""

    def __init__(self, destination: str, volume: str, epoch: int | None) -> None:
        self.epoch = epoch
        at = "" if epoch is None else f" at epoch {epoch}"
        super().__init__(
            destination,
            volume,
            volume,
            message=(
                f"destination {destination} is a primary of {volume!r}{at}, not a replica; "
                "zflock never receives into a primary: demote it to a replica first"
            ),
        )


class EpochNewerOnDestination(ReplicationConflict):
    """The destination has seen a newer primary than the source: the source is stale."""

    def __init__(
        self, source: str, source_epoch: int, destination: str, destination_epoch: int
    ) -> None:
        self.source = source
        self.source_epoch = source_epoch
        self.destination = destination
        self.destination_epoch = destination_epoch
        super().__init__(
            f"destination {destination} is at epoch {destination_epoch}, newer than "
            f"{source} at epoch {source_epoch}: the source is a stale copy and must not "
            "overwrite it; find the current primary before replicating"
        )


class NoCommonSnapshot(ReplicationConflict):
    """Both sides have snapshots but share none (by GUID): no incremental base."""

    def __init__(
        self,
        source: str,
        destination: str,
        source_snapshots: Sequence[SnapRef],
        destination_snapshots: Sequence[SnapRef],
    ) -> None:
        self.source = source
        self.destination = destination
        self.source_snapshots = tuple(source_snapshots)
        self.destination_snapshots = tuple(destination_snapshots)
        super().__init__(
            f"destination {destination} ({_count(len(destination_snapshots), 'snapshot')}) "
            f"shares no snapshot with {source} (matched by GUID, not name), so no incremental "
            "send is possible; if this replica is expendable, destroy it and run again to "
            "send it in full"
        )


class Diverged(ReplicationConflict):
    """The destination has snapshots after the common base that the source lacks."""

    def __init__(
        self,
        source: str,
        destination: str,
        common_base: SnapRef,
        destination_only: Sequence[SnapRef],
        source_only: Sequence[SnapRef],
    ) -> None:
        self.source = source
        self.destination = destination
        self.common_base = common_base
        self.destination_only = tuple(destination_only)
        self.source_only = tuple(source_only)
        n = len(destination_only)
        super().__init__(
            f"destination {destination} has {_count(n, 'snapshot')} after the common base "
            f"{common_base.describe()} that {source} lacks: {_listing(destination_only)}; "
            f"inspect {'it' if n == 1 else 'them'} first, then rerun with --force-rollback "
            "to discard them"
        )


class SnapshotNameTaken(ReplicationConflict):
    """A destination-only snapshot has the name of a snapshot we are about to send.

    The receive would fail on the name (same name, different GUID: not the same
    snapshot), so zflock stops before sending instead of after.
    """

    def __init__(self, destination: str, taken: Sequence[SnapRef]) -> None:
        self.destination = destination
        self.taken = tuple(taken)
        super().__init__(
            f"destination {destination} already has {_listing(taken)} under the name of "
            "a different source snapshot that must be received; inspect it, then rename it "
            "or rerun with --force-rollback to destroy it"
        )
