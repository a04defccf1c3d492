"""The volumes of this node: create, list, destroy, snapshot.

This is the agent's only code that changes volumes for the basic operations;
it talks to ZFS exclusively through `zflock.zfs.Zfs`. Each public method is
called with the volume's lock held (see handlers.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from zflock.agent.policies import policy_view
from zflock.cluster.config import AgentConfig
from zflock.cluster.lease import PROP_FENCED
from zflock.cluster.ownership import (
    PROP_STALE,
    ROLE_PRIMARY,
    ZFLOCK_PROPERTIES,
    NotManaged,
    Ownership,
    ownership_from_properties,
    ownership_properties,
)
from zflock.errors import ZflockError
from zflock.move.marker import PROP_MOVE
from zflock.replication import naming
from zflock.replication.naming import snapshot_name
from zflock.replication.policy import POLICY_PROPERTIES, PROP_POLICY_COPY, PROP_POLICY_SERIAL
from zflock.replication.zfs_prune import release_base_holds
from zflock.rpc.messages import Destroyed, SnapshotInfo, VolumeInfo
from zflock.zfs import (
    Dataset,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DatasetState,
    Snapshot,
    Zfs,
    validate_component,
)

log = logging.getLogger("zflock.agent.volumes")

# Properties read for every listed copy, in one `zfs get` over the pool root.
LIST_PROPERTIES = (
    *ZFLOCK_PROPERTIES,
    *POLICY_PROPERTIES,
    "mountpoint",
    "mounted",
    "readonly",
    "used",
    "referenced",
    "quota",
    PROP_MOVE,
    PROP_STALE,
    PROP_FENCED,
    PROP_POLICY_SERIAL,
    PROP_POLICY_COPY,
)


# With the snapshots' creation time: what one listing reads, copies and snapshots at once.
LISTED_PROPERTIES = (*LIST_PROPERTIES, "creation")
LISTED_TYPES = ("filesystem", "snapshot")


def _split(listed: Sequence[Dataset]) -> tuple[list[Dataset], dict[str, list[Dataset]]]:
    """Filesystems, and each one's snapshots in the order listed (oldest first)."""
    datasets: list[Dataset] = []
    snapshots: dict[str, list[Dataset]] = defaultdict(list)
    for ds in listed:
        if ds.type == "snapshot":
            snapshots[ds.name.split("@", 1)[0]].append(ds)
        else:
            datasets.append(ds)
    return datasets, snapshots


class VolumeNotFound(ZflockError):
    pass


class NotPrimary(ZflockError):
    pass


def parse_int(value: str | None) -> int | None:
    if value is None or value in ("-", "none", ""):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def next_sequence(ownership: Ownership, snapshot_names: list[str]) -> int:
    """The next snapshot sequence number: one past the highest of the names of the
    copy's snapshots (all of them: callers pass a full listing) and of the floor
    `zflock:seq` on the dataset.

    The names are the counter. zflock no longer raises `zflock:seq` with each
    snapshot (that was one more `zfs set`, a sync task of its own, in every
    replication run and inside a move's downtime); it stays a floor, from creation
    or from older versions. The highest name cannot be lost to zflock's own
    pruning: retention never destroys a copy's newest snapshot
    (replication/retention.py), and sequence numbers only grow, so the newest
    holds the highest. Only an operator's `zfs destroy` of the newest could let a
    number be used twice, and then under a later timestamp, so never the same name.
    """
    return max(ownership.seq + 1, naming.next_sequence(snapshot_names))


class Volumes:
    def __init__(self, config: AgentConfig, zfs: Zfs) -> None:
        self.config = config
        self.zfs = zfs

    # -- reading ------------------------------------------------------------------

    async def list(self, names: list[str] | None = None) -> list[VolumeInfo]:
        """Every zflock copy under the pool root, or only the `names` asked for.

        Named copies are read one dataset each, so `zflock ls VOLUME` costs the
        same with a thousand volumes as with one.
        """
        for name in names or ():
            validate_component(name, "volume name")
        if names:
            found = await asyncio.gather(*(self._get_or_none(n) for n in dict.fromkeys(names)))
            return [info for info in found if info is not None]
        root = self.config.pool_root
        # One `zfs get -r` for copies and snapshots: it walks the snapshots anyway.
        listed = await self.zfs.list_datasets(
            root, LISTED_PROPERTIES, recursive=True, types=LISTED_TYPES
        )
        datasets, by_dataset = _split(listed)
        volumes = []
        for ds in datasets:
            parent, _, _ = ds.name.rpartition("/")
            if parent != root:
                continue
            try:
                ownership = ownership_from_properties(ds.properties)
            except NotManaged:
                continue  # not ours: never list, touch or count it
            volumes.append(self._info(ds, ownership, by_dataset.get(ds.name, [])))
        return volumes

    async def _get_or_none(self, name: str) -> VolumeInfo | None:
        try:
            return await self.get(name)
        except VolumeNotFound:
            return None

    async def get(self, name: str) -> VolumeInfo:
        """One copy, read from its own dataset: as fast with a thousand volumes as with one."""
        dataset = self.config.dataset(validate_component(name, "volume name"))
        missing = self._missing(name)
        try:
            listed = await self.zfs.list_datasets(
                dataset, LISTED_PROPERTIES, recursive=True, types=LISTED_TYPES
            )
            datasets, snaps = _split(listed)
            found = [ds for ds in datasets if ds.name == dataset]
            if not found:  # not a filesystem
                raise missing
            ownership = ownership_from_properties(found[0].properties)
            return self._info(found[0], ownership, snaps.get(dataset, []))
        except (DatasetNotFound, NotManaged):
            raise missing from None

    # Sequence, not list: inside this class `list` is the method above.
    def _info(self, ds: Dataset, o: Ownership, snaps: Sequence[Dataset]) -> VolumeInfo:
        p = ds.properties
        latest = snaps[-1] if snaps else None
        policy, policy_error = policy_view(o.volume, self.config.node, p)
        return VolumeInfo(
            name=o.volume,
            node=self.config.node,
            id=o.id,
            role=o.role,
            epoch=o.epoch,
            origin=o.origin,
            mountpoint=p.get("mountpoint") or "",
            mounted=p.get("mounted") == "yes",
            readonly=p.get("readonly") == "on",
            used=parse_int(p.get("used")) or 0,
            referenced=parse_int(p.get("referenced")) or 0,
            quota=parse_int(p.get("quota")) or None,
            snapshots=len(snaps),
            latest_snapshot=latest.name.split("@", 1)[1] if latest else None,
            latest_snapshot_time=parse_int(latest.properties.get("creation")) if latest else None,
            move=p.get(PROP_MOVE) or None,
            stale=p.get(PROP_STALE) or None,
            fenced=p.get(PROP_FENCED) or None,
            policy=policy,
            policy_error=policy_error,
            policy_serial=parse_int(p.get(PROP_POLICY_SERIAL)),
            policy_copy=p.get(PROP_POLICY_COPY) or None,
        )

    async def ownership(self, name: str) -> Ownership:
        dataset = self.config.dataset(validate_component(name, "volume name"))
        try:  # one `zfs get`: no separate existence check first
            props = await self.zfs.get(dataset, ZFLOCK_PROPERTIES)
        except DatasetNotFound:
            raise self._missing(name) from None
        return self._owned(dataset, props)

    def _missing(self, name: str) -> VolumeNotFound:
        return VolumeNotFound(f"volume {name} not found on node {self.config.node}")

    def _owned(self, dataset: str, props: Mapping[str, str | None]) -> Ownership:
        try:
            return ownership_from_properties(props)
        except NotManaged as exc:
            raise ZflockError(
                f"{dataset} on node {self.config.node} is not a zflock volume ({exc}); "
                "zflock will not touch it"
            ) from None

    # -- changing -----------------------------------------------------------------

    async def create(self, name: str, quota: int | None) -> VolumeInfo:
        validate_component(name, "volume name")
        if quota is not None and quota <= 0:
            raise ZflockError(f"quota must be positive, got {quota}")
        dataset = self.config.dataset(name)
        ownership = Ownership(
            volume=name,
            id=str(uuid.uuid4()),
            epoch=1,
            role=ROLE_PRIMARY,
            origin=self.config.node,
            seq=0,
        )
        # All properties in the one `zfs create`: the dataset never exists
        # unmarked, even if the agent is killed half way.
        props = {
            **ownership_properties(ownership),
            "mountpoint": self.config.mountpoint(name),
            "readonly": "off",
            "canmount": "on",
        }
        if quota is not None:
            props["quota"] = str(quota)
        try:
            await self.zfs.create(dataset, props)
        except DatasetExists:
            raise ZflockError(f"volume {name} already exists on node {self.config.node}") from None
        log.info("created %s at %s", dataset, props["mountpoint"], extra={"volume": name})
        return await self.get(name)

    async def destroy(self, name: str, *, force: bool) -> Destroyed:
        ownership = await self.ownership(name)
        if not ownership.is_primary and not force:
            raise NotPrimary(
                f"node {self.config.node} holds a {ownership.role} of {name}, not its primary; "
                "pass --force to destroy this copy"
            )
        dataset = self.config.dataset(name)
        snaps = await self.zfs.list_snapshots(dataset)
        try:
            # Unmount first: zfs-fuse refuses to destroy a mounted filesystem
            # ("dataset is busy") even when nothing uses it, and on every ZFS
            # a failing unmount is the clearest sign that a process holds it.
            if await self.zfs.is_mounted(dataset):
                await self.zfs.unmount(dataset)
            await release_base_holds(self.zfs, dataset)  # a replica's base (OpenZFS)
            await self.zfs.destroy(dataset, recursive=True)
        except DatasetBusy:
            raise ZflockError(
                f"volume {name} on node {self.config.node} is busy: a process uses "
                f"{self.config.mountpoint(name)}, or ZFS still holds one of its snapshots "
                "(a send in progress); stop it and retry"
            ) from None
        log.warning(
            "destroyed %s (%s, epoch %d, %d snapshots)",
            dataset,
            ownership.role,
            ownership.epoch,
            len(snaps),
            extra={"volume": name},
        )
        node = self.config.node
        return Destroyed(name=name, node=node, role=ownership.role, snapshots=len(snaps))

    async def snapshot(self, name: str, now: datetime | None = None) -> SnapshotInfo:
        """Snapshot the volume (`zflock snapshot`): `snapshot_known` after a read of the
        copy, then a read of the new snapshot alone for its GUID and creation time."""
        dataset = self.config.dataset(validate_component(name, "volume name"))
        read = await self.zfs.dataset_state(dataset, ZFLOCK_PROPERTIES)
        if read is None:
            raise self._missing(name)
        taken = await self.snapshot_known(name, read, now)
        after = await self.zfs.dataset_state_with(dataset, ZFLOCK_PROPERTIES, [taken])
        if after is None:
            raise self._missing(name)
        return self.snapshot_info(name, after, taken)

    async def snapshot_known(
        self, name: str, known: DatasetState, now: datetime | None = None
    ) -> str:
        """Snapshot the volume's copy as `known` shows it and return the snapshot's name.

        For a caller that read the copy (ownership and snapshots) under the volume's
        lock, so that nothing changed since, and reads it again next anyway: a
        replication cycle or a move's round (agent/link.py) finds the snapshot in
        that read (`snapshot_info`). One command; `snapshot` adds a read each side.
        """
        dataset = self.config.dataset(validate_component(name, "volume name"))
        ownership = self._owned(dataset, known.values)
        snap_name = self._next(name, ownership, known.snapshots, now)
        full = await self.zfs.take_snapshot(dataset, snap_name)
        log.info("snapshot %s", full, extra={"volume": name})
        return snap_name

    def snapshot_info(self, name: str, read: DatasetState, snap_name: str) -> SnapshotInfo:
        """The snapshot `snapshot_known` took, as `read` (taken after it) lists it."""
        for snap in read.snapshots:
            if snap.name == snap_name:
                return SnapshotInfo(
                    volume=name, node=self.config.node, snapshot=snap.name,
                    guid=snap.guid, creation=snap.creation,
                )  # fmt: skip
        raise DatasetNotFound(f"snapshot {read.name}@{snap_name} vanished right after it was taken")

    def _next(
        self,
        name: str,
        ownership: Ownership,
        existing: Sequence[Snapshot],
        now: datetime | None,
    ) -> str:
        """The next snapshot's name; only a primary is snapshotted."""
        if not ownership.is_primary:
            # A snapshot on a replica would fork its history from the primary's.
            raise NotPrimary(
                f"node {self.config.node} holds a replica of {name}; snapshot it on its primary"
            )
        seq = next_sequence(ownership, [s.name for s in existing])
        return snapshot_name(now or datetime.now(UTC), seq)
