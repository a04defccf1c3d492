"""Compare two snapshot histories by GUID (pure).

The idea follows zrepl's `IncrementalPath`: walk both histories and find the
newest snapshot they share. Shared means the same GUID, never the same name,
because a name can be reused for different content (an operator destroys
`@daily` and takes a new `@daily`) while a received snapshot always keeps the
sender's GUID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zflock.replication.model import SnapRef


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
