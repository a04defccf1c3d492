"""Sender and Receiver over a node's own ZFS: the only replication code that runs ZFS.

`ZfsReceiver` is where the destination defends itself. It is handed a plan
step by a peer, and it re-checks every rule that protects its data before
running anything: it receives only into a zflock *replica* of the *same*
volume (by `zflock:id`) whose epoch is not newer than the sender's, it
adopts, destroys, rolls back or receives with -F only what its own state
allows (admit.py), whatever the peer asked, and it verifies the GUID it
received. A peer with a bug or a stale view cannot make it
overwrite a primary or another volume.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from zflock.cluster.ownership import (
    ROLE_REPLICA,
    ZFLOCK_PROPERTIES,
    NotManaged,
    Ownership,
    ownership_from_properties,
    ownership_properties,
)
from zflock.errors import ZflockError
from zflock.replication import zfs_prune
from zflock.replication.admit import admit_cleanup, admit_receive
from zflock.replication.endpoint import (
    Cleanup,
    PruneAnswer,
    PruneRequest,
    ReceiveResult,
    ReplicaModified,
    SourceIdentity,
    StepHeader,
)
from zflock.replication.model import ReplicaInfo, SnapRef, Source
from zflock.zfs import DestinationModified, Snapshot, Zfs

log = logging.getLogger("zflock.replication")


class ReceiveRefused(ZflockError):
    """The destination refused a step: receiving it could destroy data that is not ours."""


def snapref(s: Snapshot) -> SnapRef:
    # createtxg where the ZFS has it; otherwise the listing position, which
    # is creation order within one dataset (LAB.md).
    order = s.createtxg if s.createtxg is not None else s.index
    return SnapRef(name=s.name, guid=s.guid, order=order, size=s.referenced)


class ZfsSender:
    """The sending side: a volume's dataset on this node."""

    def __init__(self, zfs: Zfs, dataset: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.node = node
        self._snapshots: dict[int, Snapshot] = {}

    async def ownership(self) -> Ownership:
        props = await self.zfs.get(self.dataset, ZFLOCK_PROPERTIES)
        try:
            return ownership_from_properties(props)
        except NotManaged as exc:
            raise ZflockError(f"{self.dataset} is not a zflock volume ({exc})") from None

    async def source(self) -> Source:
        o = await self.ownership()
        snaps = await self.zfs.list_snapshots(self.dataset)
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


class ZfsReceiver:
    """The receiving side: `<pool_root>/<volume>` on this node, kept as a replica."""

    def __init__(self, zfs: Zfs, dataset: str, mountpoint: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.mountpoint = mountpoint
        self.node = node

    # -- looking ------------------------------------------------------------------

    async def state(self) -> ReplicaInfo:
        if not await self.zfs.exists(self.dataset):
            return ReplicaInfo(exists=False, label=f"{self.node}:{self.dataset}")
        props = await self.zfs.get(self.dataset, ZFLOCK_PROPERTIES)
        written = await self._written()
        epoch = props.get("zflock:epoch")
        token = await self.zfs.resume_token(self.dataset)  # None where ZFS cannot resume
        # The snapshot the token completes: the planner's proof that an unstamped
        # partial first receive (OpenZFS keeps it as the dataset itself) is ours.
        decoded = await self.zfs.describe_resume_token(token) if token else None
        return ReplicaInfo(
            exists=True,
            managed_volume=props.get("zflock:volume"),
            volume_id=props.get("zflock:id"),
            role=props.get("zflock:role"),
            epoch=int(epoch) if epoch and epoch.isdigit() else None,
            modified_since_last_snapshot=bool(written),
            resume_token=token,
            resume_to_guid=decoded.to_guid if decoded else None,
            snapshots=[snapref(s) for s in await self.zfs.list_snapshots(self.dataset)],
            label=f"{self.node}:{self.dataset}",
        )

    async def _written(self) -> int | None:
        """Bytes written since the newest snapshot (`written`), where the ZFS has it."""
        try:
            value = (await self.zfs.get(self.dataset, ["written"])).get("written")
        except ZflockError:
            return None  # zfs-fuse has no `written`
        return int(value) if value and value.isdigit() else None

    async def _check(
        self, source: SourceIdentity, *, may_be_absent: bool, may_be_partial: bool = False
    ) -> Ownership | None:
        """The rules that protect this node's data, checked on every call.

        None: absent (when allowed), or, with `may_be_partial`, an interrupted first
        receive that was never stamped. Such a dataset holds no completed data (no
        snapshot): resuming it only completes that one stream (ZFS checks the stream
        against the partial state) and aborting it loses nothing.
        """
        if not await self.zfs.exists(self.dataset):
            if may_be_absent:
                return None
            raise ReceiveRefused(f"{self.node}: {self.dataset} does not exist")
        props = await self.zfs.get(self.dataset, ZFLOCK_PROPERTIES)
        if (
            may_be_partial
            and props.get("zflock:volume") is None
            and await self._unstamped_partial()
        ):
            return None
        try:
            o = ownership_from_properties(props)
        except NotManaged as exc:
            raise ReceiveRefused(
                f"{self.node}: {self.dataset} is not a zflock replica ({exc}); refusing to "
                "receive into it"
            ) from None
        if o.id != source.volume_id:
            raise ReceiveRefused(
                f"{self.node}: {self.dataset} belongs to another volume (id {o.id}, "
                f"sender's {source.volume_id})"
            )
        if o.role != ROLE_REPLICA:
            raise ReceiveRefused(
                f"{self.node}: {self.dataset} is the {o.role} of {o.volume}; only a replica "
                "is ever received into"
            )
        if o.epoch > source.epoch:
            raise ReceiveRefused(
                f"{self.node}: {self.dataset} has epoch {o.epoch}, newer than the sender's "
                f"{source.epoch}: the sender is a fenced former primary"
            )
        return o

    async def _unstamped_partial(self) -> bool:
        return bool(
            await self.zfs.resume_token(self.dataset)
            and not await self.zfs.list_snapshots(self.dataset)
        )

    async def _by_guid(self, ref: SnapRef) -> Snapshot:
        for s in await self.zfs.list_snapshots(self.dataset):
            if s.guid == ref.guid:
                return s
        raise ReceiveRefused(f"{self.node}: {self.dataset} has no snapshot with guid {ref.guid}")

    # -- changing -----------------------------------------------------------------

    async def prepare(self, source: SourceIdentity, cleanup: Cleanup) -> None:
        if not await self.zfs.exists(self.dataset):
            raise ReceiveRefused(f"{self.node}: {self.dataset} does not exist")
        # The peer's cleanup is a request: checked against this node's own state, now
        # (the agent holds the volume lock), before anything changes (admit.py).
        claimed = Source(
            volume=source.volume,
            epoch=source.epoch,
            snapshots=cleanup.source_snapshots,
            label=f"{source.node}:{source.volume}",
            volume_id=source.volume_id,
        )
        admit_cleanup(claimed, await self.state(), cleanup)
        if cleanup.adopt:
            log.warning(
                "%s: adopting our own first receive of %s, never stamped (interrupted "
                "before it could be)",
                self.dataset,
                source.volume,
            )
            await self._stamp(source)
        owner = await self._check(
            source, may_be_absent=False, may_be_partial=cleanup.abort_partial_receive
        )
        if owner is None:  # an unstamped partial first receive (see _check)
            log.warning("%s: discarding an interrupted first receive", self.dataset)
            await self.zfs.abort_resumable_receive(self.dataset)
            return
        if cleanup.abort_partial_receive:
            log.warning("%s: discarding a partial receive", self.dataset)
            await self.zfs.abort_resumable_receive(self.dataset)
        if cleanup.recreate:
            if await self.zfs.list_snapshots(self.dataset):
                raise ReceiveRefused(
                    f"{self.node}: {self.dataset} has snapshots; refusing to destroy it"
                )
            log.warning("%s: destroying the empty replica to receive it in full", self.dataset)
            await self._unmount()
            await self.zfs.destroy(self.dataset)  # no -r: ZFS refuses if anything appeared
        for ref in cleanup.destroy_snapshots:
            snap = await self._by_guid(ref)
            log.warning(
                "%s: destroying @%s (guid %d), which the source lacks (--force-rollback)",
                self.dataset,
                snap.name,
                snap.guid,
            )
            await self.zfs.destroy_snapshot(self.dataset, snap.name)
        if cleanup.rollback_to is not None:
            snap = await self._by_guid(cleanup.rollback_to)
            log.warning("%s: rolling back to @%s", self.dataset, snap.name)
            await self.zfs.rollback(self.dataset, snap.name)

    async def receive(
        self, source: SourceIdentity, header: StepHeader, chunks: AsyncIterator[bytes]
    ) -> ReceiveResult:
        resume = header.kind == "resume"
        existing = await self._check(
            source, may_be_absent=header.kind == "full" or resume, may_be_partial=resume
        )
        if header.kind == "full" and existing is not None:
            raise ReceiveRefused(f"{self.node}: {self.dataset} exists; a full stream cannot land")
        if header.kind == "incremental":
            assert header.base is not None
            await self._by_guid(header.base)
        if header.force:  # -F is a request too: admitted only from this node's own state
            admit_receive(await self.state(), header)
        caps = await self.zfs.capabilities()
        received = 0
        try:
            async with self.zfs.receive(
                self.dataset,
                force=header.force,
                unmounted=caps.receive_unmounted,
                resumable=header.resumable and caps.resume_tokens,
            ) as r:
                async for chunk in chunks:
                    await r.write(chunk)
                    received += len(chunk)
        except DestinationModified as exc:
            # ZFS's own test, reliable where `written` is missing (zfs-fuse): the
            # driver plans again knowing it (rule 12) and asks for a rollback.
            raise ReplicaModified(
                f"{self.node}: {self.dataset} was written to after its newest snapshot ({exc})"
            ) from None
        await self._stamp(source)
        snaps = await self.zfs.list_snapshots(self.dataset)
        newest = snaps[-1] if snaps else None
        if header.to is not None and (newest is None or newest.guid != header.to.guid):
            raise ZflockError(
                f"{self.node}: after receiving, the newest snapshot of {self.dataset} is "
                f"{newest.name if newest else 'none'}, not @{header.to.name} "
                f"(guid {header.to.guid})"
            )
        return ReceiveResult(
            snapshot=newest.name if newest else None,
            guid=newest.guid if newest else None,
            bytes=received,
        )

    async def prune(self, source: SourceIdentity, request: PruneRequest) -> PruneAnswer:
        """Prune this replica as a peer asks, if its own decision agrees (the agent holds
        the volume lock); checked like a receive first (zfs_prune.prune_replica)."""
        await self._check(source, may_be_absent=False)
        info = await self.state()
        return await zfs_prune.prune_replica(self.zfs, self.dataset, info, source.node, request)

    async def _stamp(self, source: SourceIdentity) -> None:
        """Mark the copy a read-only, unmounted replica of the sender's volume and epoch."""
        o = Ownership(
            volume=source.volume,
            id=source.volume_id,
            epoch=source.epoch,
            role=ROLE_REPLICA,
            origin=source.origin,
            seq=0,
        )
        props = ownership_properties(o)
        del props["zflock:seq"]  # the sequence is the primary's business
        # readonly first: on zfs-fuse each property is its own command, and a
        # copy marked as the volume must never be writable, not even briefly.
        await self.zfs.set(
            self.dataset,
            {
                "readonly": "on",
                "canmount": "noauto",
                "mountpoint": self.mountpoint,
                **props,
            },
        )
        await self._unmount()

    async def _unmount(self) -> None:
        if await self.zfs.is_mounted(self.dataset):
            await self.zfs.unmount(self.dataset)
