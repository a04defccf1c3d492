"""Holds and bookmarks (OpenZFS; zfs-fuse has neither, see probe.py).

A user hold keeps a snapshot from being destroyed until it is released; a
bookmark keeps a snapshot's GUID and createtxg after the snapshot is gone.
zflock uses them to protect the incremental base of a replication
(docs/replication-planning.md, "Holds and the replication cursor").
"""

from __future__ import annotations

from zflock.zfs.core import ZfsCore
from zflock.zfs.names import (
    split_snapshot_name,
    validate_bookmark_name,
    validate_component,
    validate_dataset_name,
    validate_snapshot_name,
)
from zflock.zfs.types import Bookmark


class ProtectionOps(ZfsCore):
    # -- holds ------------------------------------------------------------------

    async def hold(self, snapshot: str, tag: str) -> None:
        """Place a user hold: the snapshot cannot be destroyed until it is released."""
        validate_snapshot_name(snapshot)
        validate_component(tag, "hold tag")
        argv = ["zfs", "hold", tag, snapshot]
        await self._require("holds", argv)
        await self.runner.run(argv)

    async def release(self, snapshot: str, tag: str) -> None:
        validate_snapshot_name(snapshot)
        validate_component(tag, "hold tag")
        argv = ["zfs", "release", tag, snapshot]
        await self._require("holds", argv)
        await self.runner.run(argv)

    async def holds(self, snapshot: str) -> list[str]:
        """The tags of the user holds on a snapshot, sorted."""
        return (await self.holds_of([snapshot])).get(snapshot, [])

    async def holds_of(self, snapshots: list[str]) -> dict[str, list[str]]:
        """Snapshot full name -> its hold tags (sorted), for many snapshots in one command.

        Snapshots without a hold are absent from the answer.
        """
        for snapshot in snapshots:
            validate_snapshot_name(snapshot)
        argv = ["zfs", "holds", "-H", *snapshots]
        await self._require("holds", argv)
        if not snapshots:
            return {}
        done = await self.runner.run(argv)
        tags: dict[str, list[str]] = {}
        for line in done.stdout_text.splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                tags.setdefault(fields[0], []).append(fields[1])
        return {name: sorted(found) for name, found in tags.items()}

    async def held(self, dataset: str, tag: str) -> list[str]:
        """Short names of the dataset's snapshots that carry a hold `tag`, oldest first."""
        validate_dataset_name(dataset)
        validate_component(tag, "hold tag")
        await self._require("holds", ["zfs", "holds", "-H", dataset])
        names = [s.full_name for s in await self.list_snapshots(dataset)]
        found = await self.holds_of(names)
        return [n.split("@", 1)[1] for n in names if tag in found.get(n, [])]

    # -- bookmarks --------------------------------------------------------------

    async def bookmark(self, snapshot: str, name: str) -> str:
        """Bookmark a snapshot as `<dataset>#<name>` (kept after the snapshot is destroyed,
        usable as an incremental base); returns the bookmark's full name."""
        dataset, _ = split_snapshot_name(snapshot)
        validate_component(name, "bookmark name")
        full = validate_bookmark_name(f"{dataset}#{name}")
        argv = ["zfs", "bookmark", snapshot, full]
        await self._require("bookmarks", argv)
        await self.runner.run(argv)
        return full

    async def list_bookmarks(self, dataset: str) -> list[Bookmark]:
        """The dataset's own bookmarks, oldest (lowest createtxg) first."""
        validate_dataset_name(dataset)
        argv = ["zfs", "list", "-H", "-p", "-t", "bookmark", "-d", "1"]
        argv += ["-o", "name,guid,createtxg,creation", dataset]
        await self._require("bookmarks", argv)
        done = await self.runner.run(argv)
        marks = []
        for line in done.stdout_text.splitlines():
            fields = line.split("\t")
            if len(fields) != 4 or "#" not in fields[0]:
                continue
            owner, short = fields[0].split("#", 1)
            if owner != dataset:
                continue
            marks.append(
                Bookmark(
                    dataset=owner,
                    name=short,
                    guid=int(fields[1]),
                    createtxg=int(fields[2]),
                    creation=int(fields[3]),
                )
            )
        return sorted(marks, key=lambda b: b.createtxg)

    async def destroy_bookmark(self, dataset: str, name: str) -> None:
        full = validate_bookmark_name(f"{validate_dataset_name(dataset)}#{name}")
        argv = ["zfs", "destroy", full]
        await self._require("bookmarks", argv)
        await self.runner.run(argv)
