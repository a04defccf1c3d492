"""The receiving side over a node's own ZFS (the sending side is zfs_sender.py): with
it, the only replication code that runs ZFS.

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
from collections.abc import AsyncIterator, Sequence

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
from zflock.replication.policy import (
    PROP_POLICY_COPY,
    PolicyCopy,
    copy_needs_storing,
    copy_value,
)
from zflock.replication.zfs_prune import snapref
from zflock.zfs import DatasetState, DestinationModified, Snapshot, Zfs

log = logging.getLogger("zflock.replication")


# What marks a copy as a replica besides its ownership (and its mountpoint, per node).
_STAMPED = (("readonly", "on"), ("canmount", "noauto"))


class ReceiveRefused(ZflockError):
    """The destination refused a step: receiving it could destroy data that is not ours."""


class ZfsReceiver:
    """The receiving side: `<pool_root>/<volume>` on this node, kept as a replica."""

    def __init__(self, zfs: Zfs, dataset: str, mountpoint: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.mountpoint = mountpoint
        self.node = node

    # -- looking ------------------------------------------------------------------

    async def _read(self, snapshots: Sequence[str] | None = None) -> DatasetState | None:
        """Everything the receiving side decides from, in one command (absent: None).

        One read per decision, not one per property: on zfs-fuse each command is a
        process and a daemon round trip, and a scheduled run's cost was mostly
        these (docs/benchmarks.md, "Continuous replication at scale"). With
        `snapshots`, only those snapshots are read, by name (Zfs.dataset_state_with:
        a walk of every snapshot costs the daemon by the snapshot); all of them when
        one of those is missing."""
        caps = await self.zfs.capabilities()
        props = [*ZFLOCK_PROPERTIES, *(p for p, _ in _STAMPED), "mountpoint", "mounted",
                 PROP_POLICY_COPY]  # fmt: skip
        if caps.resume_tokens:
            props.append("receive_resume_token")
        if caps.implementation == "openzfs":  # zfs-fuse has no `written`
            props.append("written")
        if snapshots is not None:
            return await self.zfs.dataset_state_with(self.dataset, props, snapshots)
        return await self.zfs.dataset_state(self.dataset, props)

    async def state(self) -> ReplicaInfo:
        return await self._info(await self._read())

    async def _info(self, read: DatasetState | None) -> ReplicaInfo:
        if read is None:
            return ReplicaInfo(exists=False, label=f"{self.node}:{self.dataset}")
        props = read.values
        written = props.get("written")
        epoch = props.get("zflock:epoch")
        token = read.resume_token
        # The snapshot the token completes: the planner's proof that an unstamped
        # partial first receive (OpenZFS keeps it as the dataset itself) is ours.
        decoded = await self.zfs.describe_resume_token(token) if token else None
        return ReplicaInfo(
            exists=True,
            managed_volume=props.get("zflock:volume"),
            volume_id=props.get("zflock:id"),
            role=props.get("zflock:role"),
            epoch=int(epoch) if epoch and epoch.isdigit() else None,
            # Bytes written since the newest snapshot, where the ZFS has `written`.
            modified_since_last_snapshot=bool(written and written.isdigit() and int(written)),
            resume_token=token,
            resume_to_guid=decoded.to_guid if decoded else None,
            snapshots=[snapref(s) for s in read.snapshots],
            label=f"{self.node}:{self.dataset}",
        )

    async def _check(
        self, source: SourceIdentity, *, may_be_absent: bool, may_be_partial: bool = False
    ) -> Ownership | None:
        """`_admit` over the copy as it is now."""
        return self._admit(
            await self._read(), source, may_be_absent=may_be_absent, may_be_partial=may_be_partial
        )

    def _admit(
        self,
        read: DatasetState | None,
        source: SourceIdentity,
        *,
        may_be_absent: bool,
        may_be_partial: bool = False,
    ) -> Ownership | None:
        """The rules that protect this node's data, checked on every call.

        None: absent (when allowed), or, with `may_be_partial`, an interrupted first
        receive that was never stamped. Such a dataset holds no completed data (no
        snapshot): resuming it only completes that one stream (ZFS checks the stream
        against the partial state) and aborting it loses nothing.
        """
        if read is None:
            if may_be_absent:
                return None
            raise ReceiveRefused(f"{self.node}: {self.dataset} does not exist")
        props = read.values
        if (
            may_be_partial
            and props.get("zflock:volume") is None
            and read.resume_token
            and not read.snapshots
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

    def _by_guid(self, snapshots: list[Snapshot], ref: SnapRef) -> Snapshot:
        for s in snapshots:
            if s.guid == ref.guid:
                return s
        raise ReceiveRefused(f"{self.node}: {self.dataset} has no snapshot with guid {ref.guid}")

    # -- changing -----------------------------------------------------------------

    async def prepare(self, source: SourceIdentity, cleanup: Cleanup) -> None:
        read = await self._read()
        if read is None:
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
        admit_cleanup(claimed, await self._info(read), cleanup)
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
        snaps = (
            await self.zfs.list_snapshots(self.dataset)
            if cleanup.destroy_snapshots or cleanup.rollback_to is not None
            else []
        )
        for ref in cleanup.destroy_snapshots:
            snap = self._by_guid(snaps, ref)
            log.warning(
                "%s: destroying @%s (guid %d), which the source lacks (--force-rollback)",
                self.dataset,
                snap.name,
                snap.guid,
            )
            await self.zfs.destroy_snapshot(self.dataset, snap.name)
        if cleanup.rollback_to is not None:
            snap = self._by_guid(snaps, cleanup.rollback_to)
            log.warning("%s: rolling back to @%s", self.dataset, snap.name)
            await self.zfs.rollback(self.dataset, snap.name)

    async def receive(
        self, source: SourceIdentity, header: StepHeader, chunks: AsyncIterator[bytes]
    ) -> ReceiveResult:
        resume = header.kind == "resume"
        # A plain incremental step is decided from the copy's marks and its base
        # alone, so only the base is read; a forced one from every snapshot.
        base = header.base if header.kind == "incremental" and not header.force else None
        read = await self._read([base.name] if base else None)
        if base and read is not None and all(s.guid != base.guid for s in read.snapshots):
            read = await self._read()  # the name is another snapshot's: the GUID decides
        existing = self._admit(
            read, source, may_be_absent=header.kind == "full" or resume, may_be_partial=resume
        )
        if header.kind == "full" and existing is not None:
            raise ReceiveRefused(f"{self.node}: {self.dataset} exists; a full stream cannot land")
        if header.kind == "incremental":
            assert header.base is not None and read is not None
            self._by_guid(read.snapshots, header.base)
        if header.force:  # -F is a request too: admitted only from this node's own state
            admit_receive(await self._info(read), header)
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
        # Read with the snapshot just received only: a receive adds it as the newest,
        # so it is what the newest must be (all are read if it is missing).
        snaps = (await self._stamp(source, header.to.name if header.to else None)).snapshots
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

    async def prune(
        self, source: SourceIdentity, request: PruneRequest, policy: PolicyCopy | None = None
    ) -> PruneAnswer:
        """Prune this replica as a peer asks, if its own decision agrees (the agent holds
        the volume lock); checked like a receive first (zfs_prune.prune_replica). Then
        keep `policy`, the primary's, as this replica's copy (docs/failover.md): only
        when it changed or is getting old (policy.copy_needs_storing)."""
        read = await self._read()
        self._admit(read, source, may_be_absent=False)
        assert read is not None
        info = await self._info(read)
        answer = await zfs_prune.prune_replica(self.zfs, self.dataset, info, source.node, request)
        if policy is not None and copy_needs_storing(read.values.get(PROP_POLICY_COPY), policy):
            await self._keep(policy)
        return answer

    async def keep_policy(self, source: SourceIdentity, policy: PolicyCopy) -> bool:
        """Keep `policy` as this replica's copy, checked as a receive is (this volume id,
        a replica, an epoch not above the sender's: a fenced former primary cannot plant
        an old policy). False: no copy of the volume here, nothing a failover could
        promote, nothing kept."""
        if self._admit(await self._read(), source, may_be_absent=True) is None:
            return False
        await self._keep(policy)
        return True

    async def _keep(self, policy: PolicyCopy) -> None:
        # One property, one `zfs set`: atomic on zfs-fuse too.
        await self.zfs.set(self.dataset, {PROP_POLICY_COPY: copy_value(policy)})

    async def _stamp(self, source: SourceIdentity, snapshot: str | None = None) -> DatasetState:
        """Mark the copy a read-only, unmounted replica of the sender's volume and epoch;
        return the copy as read for it (its snapshots: a property changes none; with
        `snapshot`, that one only, as `_read` reads it)."""
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
        wanted = {**dict(_STAMPED), "mountpoint": self.mountpoint, **props}
        read = await self._read([snapshot] if snapshot is not None else None)
        if read is None:
            raise ZflockError(f"{self.node}: {self.dataset} vanished while it was received")
        # Only what differs, set here: after an incremental receive nothing does (a
        # receive without -p keeps properties), so a scheduled run sets nothing.
        # readonly first (dict order): on zfs-fuse each property is its own command,
        # and a copy marked as the volume must never be writable, not even briefly.
        changes = {p: v for p, v in wanted.items() if not read.is_local(p, v)}
        if changes:
            await self.zfs.set(self.dataset, changes)
            await self._unmount()  # a new mountpoint may have remounted it: ask again
        elif read.values.get("mounted") == "yes":
            await self.zfs.unmount(self.dataset)
        return read

    async def _unmount(self) -> None:
        if await self.zfs.is_mounted(self.dataset):
            await self.zfs.unmount(self.dataset)
