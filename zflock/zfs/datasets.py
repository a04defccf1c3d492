"""Changing datasets and snapshots: properties, create, destroy, snapshot, rollback, rename."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from zflock.zfs.argv import validate_any_name, validate_properties
from zflock.zfs.errors import DatasetNotFound
from zflock.zfs.mounting import MountOps
from zflock.zfs.names import (
    InvalidName,
    split_snapshot_name,
    validate_component,
    validate_dataset_name,
    validate_property_name,
    validate_snapshot_name,
)
from zflock.zfs.parse import format_properties
from zflock.zfs.types import Snapshot

_EMPTY: Mapping[str, str] = {}


class DatasetOps(MountOps):
    async def set(self, name: str, properties: Mapping[str, str]) -> None:
        """Set properties. One command on OpenZFS (atomic); one per property on
        zfs-fuse, whose `zfs set` takes a single property=value."""
        validate_any_name(name)
        validate_properties(properties)
        if not properties:
            return
        pairs = [f"{k}={v}" for k, v in properties.items()]
        caps = await self.capabilities()
        if caps.implementation == "openzfs":
            await self.runner.run(["zfs", "set", *pairs, name])
            return
        for pair in pairs:
            await self.runner.run(["zfs", "set", pair, name])

    async def set_in_steps(self, name: str, steps: Sequence[Mapping[str, str]]) -> None:
        """Set properties in steps: each step's properties land before the next step's
        are written, and within a step the order does not matter.

        OpenZFS: all of them in one command (atomic, which keeps every order). zfs-fuse:
        the steps one after another, a step's properties at once, one command each.
        (`write_at_once` says why and what a failure leaves.)"""
        validate_any_name(name)
        for step in steps:
            validate_properties(step)
        caps = await self.capabilities()
        if caps.implementation == "openzfs":
            await self.set(name, {k: v for step in steps for k, v in step.items()})
            return
        for step in steps:
            await self.write_at_once(name, step)

    async def write_at_once(
        self, name: str, values: Mapping[str, str], clear: Sequence[str] = ()
    ) -> None:
        """Set `values` and clear (inherit) the properties in `clear`, with no order
        among them: every command at once.

        On zfs-fuse each `zfs set` or `zfs inherit` is a round trip to the daemon
        (~8 ms, docs/benchmarks.md), and the daemon takes several at a time: four
        sets in ~16 ms instead of ~30. OpenZFS: one `zfs set` of all the values,
        beside the inherits. On a failure the other commands still finish (each is
        bounded by the runner's timeout) and the first error is raised: a partial
        write, as one `zfs set` per property can leave anyway, so callers write
        only what is idempotent this way."""
        validate_any_name(name)
        validate_properties(values)
        for prop in clear:
            validate_property_name(prop)
        caps = await self.capabilities()
        if caps.implementation == "openzfs":
            sets = [[f"{k}={v}" for k, v in values.items()]] if values else []
        else:
            sets = [[f"{k}={v}"] for k, v in values.items()]
        argvs = [["zfs", "set", *pairs, name] for pairs in sets]
        argvs += [["zfs", "inherit", prop, name] for prop in clear]
        done = await asyncio.gather(*(self.runner.run(a) for a in argvs), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result

    async def inherit(self, name: str, prop: str) -> None:
        """Clear a local value (a user property becomes unset)."""
        validate_any_name(name)
        validate_property_name(prop)
        await self.runner.run(["zfs", "inherit", prop, name])

    async def create(
        self, name: str, properties: Mapping[str, str] = _EMPTY, *, parents: bool = False
    ) -> None:
        validate_dataset_name(name)
        validate_properties(properties)
        argv = ["zfs", "create", *(["-p"] if parents else []), *format_properties("-o", properties)]
        await self.runner.run([*argv, name])

    async def destroy(self, name: str, *, recursive: bool = False) -> None:
        """Destroy a filesystem or volume (with recursive: its children and snapshots)."""
        validate_dataset_name(name)  # refuses "a@b": use destroy_snapshot
        argv = ["zfs", "destroy", *(["-r"] if recursive else []), name]
        await self._unmounted_on_zfs_fuse(name, argv, remount_as=None)

    async def destroy_snapshot(self, dataset: str, snapname: str) -> None:
        validate_dataset_name(dataset)
        validate_component(snapname, "snapshot name")
        await self.runner.run(["zfs", "destroy", f"{dataset}@{snapname}"])

    async def snapshot(
        self, dataset: str, snapname: str, properties: Mapping[str, str] = _EMPTY
    ) -> Snapshot:
        """Take a snapshot and return it as listed (with guid and index)."""
        full = await self.take_snapshot(dataset, snapname, properties)
        for snap in await self.list_snapshots(dataset):
            if snap.name == snapname:
                return snap
        raise DatasetNotFound(f"snapshot {full!r} vanished right after it was taken")

    async def take_snapshot(
        self, dataset: str, snapname: str, properties: Mapping[str, str] = _EMPTY
    ) -> str:
        """Take a snapshot and return its full name, without listing it (one command):
        for a caller that reads the dataset next anyway (agent/link.py)."""
        validate_dataset_name(dataset)
        validate_component(snapname, "snapshot name")
        full = validate_snapshot_name(f"{dataset}@{snapname}")
        validate_properties(properties)
        await self.runner.run(["zfs", "snapshot", *format_properties("-o", properties), full])
        return full

    async def rollback(self, dataset: str, snapname: str, *, destroy_newer: bool = False) -> None:
        """Roll back to a snapshot; destroy_newer (-r) also destroys later snapshots."""
        validate_dataset_name(dataset)
        validate_component(snapname, "snapshot name")
        argv = ["zfs", "rollback", *(["-r"] if destroy_newer else []), f"{dataset}@{snapname}"]
        await self.runner.run(argv)

    async def rename(self, old: str, new: str) -> None:
        """Rename a dataset, or a snapshot within its dataset.

        zfs-fuse refuses to rename a mounted filesystem ("dataset is busy",
        for seconds, once for 45 s) but renames an unmounted one at once, so
        there the mounted datasets are unmounted first and mounted again
        under their new names (see _unmounted_on_zfs_fuse).
        """
        if "@" in old or "@" in new:
            old_ds, _ = split_snapshot_name(old)
            new_ds, _ = split_snapshot_name(new)
            if old_ds != new_ds:
                raise InvalidName(
                    f"cannot rename snapshot {old!r} to {new!r}: a snapshot stays in its dataset"
                )
            await self.runner.run(["zfs", "rename", old, new])
            return
        validate_dataset_name(old)
        validate_dataset_name(new)
        argv = ["zfs", "rename", old, new]
        await self._unmounted_on_zfs_fuse(old, argv, remount_as=new)
