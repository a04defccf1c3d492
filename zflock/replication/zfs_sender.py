"""The sending side over a node's own ZFS: a volume's primary dataset on this node.

With zfs_endpoint.py (the receiving side) the only replication code that runs ZFS.
The sender trusts nothing a peer sends either: a resume token is decoded and
checked to name this volume's dataset before `zfs send -t` runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from zflock.cluster.ownership import (
    ZFLOCK_PROPERTIES,
    NotManaged,
    Ownership,
    ownership_from_properties,
)
from zflock.errors import ZflockError
from zflock.replication import zfs_prune
from zflock.replication.endpoint import StepHeader
from zflock.replication.model import SnapRef, Source
from zflock.replication.policy import POLICY_PROPERTIES, PROP_POLICY_SERIAL
from zflock.replication.zfs_prune import snapref
from zflock.zfs import DatasetNotFound, DatasetState, Snapshot, Zfs

# What a read of the primary's copy gets: its ownership, and its replication policy
# with the policy's serial (the prune step's rules and the copy it sends the replica).
SOURCE_PROPERTIES = (*ZFLOCK_PROPERTIES, *POLICY_PROPERTIES, PROP_POLICY_SERIAL)


class ZfsSender:
    """The sending side: a volume's dataset on this node."""

    def __init__(self, zfs: Zfs, dataset: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.node = node
        self._snapshots: dict[int, Snapshot] = {}

    async def read(self) -> DatasetState:
        """The copy's ownership, policy and snapshots, in one command.

        A replication cycle (agent/link.py) reads it twice, before and after its
        snapshot, and takes everything else from those two reads (ownership, the
        source for the plan and the prune, the keep rules): on zfs-fuse each command
        is a process and a daemon round trip, most of a scheduled run's cost
        (docs/benchmarks.md, "Continuous replication at scale")."""
        read = await self.zfs.dataset_state(self.dataset, SOURCE_PROPERTIES)
        if read is None:
            raise DatasetNotFound(f"{self.node}: {self.dataset} does not exist")
        return read

    async def read_adding(self, before: DatasetState, snapshot: str) -> DatasetState:
        """The copy after `snapshot` was taken on it as `before` shows it, in one command
        that reads the properties and that snapshot only (Zfs.dataset_state_with), not
        every snapshot again: a walk costs zfs-fuse's daemon by the snapshot.

        Sound for a caller holding the volume's lock (a replication cycle): nothing of
        zflock's changes the copy between the two reads; a snapshot's GUID, order and
        referenced size never change, and only the `used` of the one before the new one
        may, which nothing but the size estimate reads. An operator's snapshot taken or
        destroyed meanwhile is seen by the next cycle (or fails this one's send)."""
        read = await self.zfs.dataset_state_with(self.dataset, SOURCE_PROPERTIES, [snapshot])
        if read is None:
            raise DatasetNotFound(f"{self.node}: {self.dataset} does not exist")
        if [s.name for s in read.snapshots] != [snapshot]:
            return read  # it is missing, so every snapshot was read: the caller says so
        new = replace(read.snapshots[0], index=len(before.snapshots))
        return replace(read, snapshots=[*before.snapshots, new])

    def ownership_of(self, read: DatasetState) -> Ownership:
        try:
            return ownership_from_properties(read.values)
        except NotManaged as exc:
            raise ZflockError(f"{self.dataset} is not a zflock volume ({exc})") from None

    async def source(self) -> Source:
        return self.source_of(await self.read())

    def source_of(self, read: DatasetState) -> Source:
        """The copy as a replication source, from `read` (this sender's own read)."""
        o, snaps = self.ownership_of(read), read.snapshots
        self._snapshots = {s.guid: s for s in snaps}
        return Source(
            volume=o.volume,
            epoch=o.epoch,
            snapshots=[snapref(s) for s in snaps],
            label=f"{self.node}:{self.dataset}",
            volume_id=o.id,
        )

    def _full(self, ref: SnapRef) -> str:
        return f"{self.dataset}@{ref.name}"

    async def estimate(self, header: StepHeader) -> int | None:
        if header.kind == "resume" or header.to is None:
            return None
        base = self._full(header.base) if header.base else None
        exact = await self.zfs.estimate_send_size(self._full(header.to), base=base)
        if exact is not None:
            return exact
        # No `send -nP` (zfs-fuse): a full stream is about the snapshot's
        # referenced size; an incremental about the growth since the base,
        # and at least the space the newer snapshots hold.
        to = self._snapshots.get(header.to.guid)
        if to is None:
            return None
        if header.base is None:
            return to.referenced
        base_snap = self._snapshots.get(header.base.guid)
        grown = to.referenced - base_snap.referenced if base_snap else 0
        held = sum(
            s.used
            for s in self._snapshots.values()
            if base_snap is not None and base_snap.index < s.index <= to.index
        )
        return max(grown, held, 0)

    async def _check_token(self, token: str | None) -> None:
        """The token comes from the peer: resume only a stream of this volume's dataset,
        never let a peer read another dataset of this node through `send -t`."""
        info = await self.zfs.describe_resume_token(token) if token else None
        if info is None or not info.to_name.startswith(self.dataset + "@"):
            named = info.to_name if info else "nothing this ZFS can decode"
            raise ZflockError(
                f"{self.node}: refusing to resume a stream of {named}: not a snapshot of "
                f"{self.dataset}"
            )

    @asynccontextmanager
    async def send(self, header: StepHeader) -> AsyncIterator[AsyncIterator[bytes]]:
        if header.kind == "resume":
            await self._check_token(header.token)
            stream = self.zfs.send("", resume_token=header.token)
        else:
            assert header.to is not None
            stream = self.zfs.send(
                self._full(header.to),
                base=self._full(header.base) if header.base else None,
                intermediates=header.intermediates,
            )
        async with stream as s:
            yield s.__aiter__()

    # -- pruning (pruning.py decides; zfs_prune.py executes) ---------------------------

    async def cursors(self) -> dict[str, int]:
        return await zfs_prune.cursors(self.zfs, self.dataset)

    async def move_cursor(self, peer: str, to: SnapRef) -> bool:
        return await zfs_prune.move_cursor(self.zfs, self.dataset, peer, to)

    async def destroy_snapshots(self, refs: list[SnapRef]) -> list[SnapRef]:
        return await zfs_prune.destroy_snapshots(
            self.zfs, self.dataset, refs, release_base_hold=True
        )
