"""`Zfs`: every `zfs`/`zpool` operation zflock performs, with typed results and errors.

Names are validated before anything runs (InvalidName); failures come back
as the typed errors of zflock.zfs.errors. Features the running ZFS may lack
are checked against the capability probe and refused with Unsupported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from zflock.zfs import pool as _pool
from zflock.zfs.errors import DatasetBusy, DatasetNotFound, Unsupported, ZfsError
from zflock.zfs.names import (
    InvalidName,
    split_snapshot_name,
    validate_bookmark_name,
    validate_component,
    validate_dataset_name,
    validate_property_name,
    validate_property_value,
    validate_snapshot_name,
)
from zflock.zfs.parse import (
    GET_FIELDS,
    SNAPSHOT_PROPERTIES,
    PropertyTable,
    format_properties,
    parse_get,
    parse_names,
    parse_resume_token_contents,
    parse_send_estimate,
    parse_snapshots,
    property_or_none,
)
from zflock.zfs.probe import probe_capabilities
from zflock.zfs.runner import Runner
from zflock.zfs.streams import ReceiveStream, SendStream
from zflock.zfs.types import (
    Bookmark,
    Capabilities,
    Dataset,
    PoolInfo,
    ResumeTokenInfo,
    Snapshot,
)

# zfs-fuse refuses `zfs mount` for about a second after `zfs unmount` of the
# same dataset ("mountpoint or dataset is busy"); retry for a few seconds.
MOUNT_RETRY_SECONDS = 3.0
_EMPTY: Mapping[str, str] = {}
_DATASET_TYPES = frozenset({"filesystem", "volume", "snapshot", "bookmark"})


def _validate_any_name(name: str) -> str:
    """A dataset, snapshot or bookmark name."""
    if "@" in name:
        return validate_snapshot_name(name)
    if "#" in name:
        return validate_bookmark_name(name)
    return validate_dataset_name(name)


def _validate_properties(properties: Mapping[str, str]) -> None:
    for key, value in properties.items():
        validate_property_name(key)
        validate_property_value(key, value)


def validate_resume_token(token: str) -> str:
    """A token comes from another node: never let it pass for an option or be empty."""
    if not token or token.startswith("-") or any(c.isspace() for c in token):
        raise InvalidName(f"invalid resume token {token!r}")
    return token


def send_argv(
    snapshot: str,
    *,
    base: str | None = None,
    intermediates: bool = False,
    replicate: bool = False,
    props: bool = False,
    resume_token: str | None = None,
) -> list[str]:
    """The argv of `zfs send` for these options (validated)."""
    if resume_token is not None:
        if base is not None or intermediates or replicate or props:
            raise InvalidName("a resumed send takes its options from the token; give no others")
        return ["zfs", "send", "-t", validate_resume_token(resume_token)]
    validate_snapshot_name(snapshot)
    argv = ["zfs", "send"]
    if replicate:
        argv.append("-R")
    if props:
        argv.append("-p")
    if base is not None:
        if "#" in base:
            validate_bookmark_name(base)
            if intermediates:
                raise InvalidName(f"-I needs a snapshot as base, not the bookmark {base!r}")
        else:
            validate_snapshot_name(base)
        argv += ["-I" if intermediates else "-i", base]
    elif intermediates:
        raise InvalidName("intermediates=True needs a base snapshot")
    return [*argv, snapshot]


def receive_argv(
    dataset: str, *, force: bool = False, unmounted: bool = False, resumable: bool = False
) -> list[str]:
    """The argv of `zfs receive`. `-F` appears only with force=True."""
    if "@" in dataset:
        validate_snapshot_name(dataset)
    else:
        validate_dataset_name(dataset)
    argv = ["zfs", "receive"]
    if force:
        argv.append("-F")
    if unmounted:
        argv.append("-u")
    if resumable:
        argv.append("-s")
    return [*argv, dataset]


class Zfs:
    """The ZFS of one node, reached through `runner`."""

    def __init__(
        self, runner: Runner | None = None, *, capabilities: Capabilities | None = None
    ) -> None:
        # `capabilities` lets a caller that already probed this node skip the probe.
        # No asyncio primitives are held here, so one Zfs may serve several event loops.
        self.runner = runner if runner is not None else Runner()
        self._capabilities = capabilities

    # -- capabilities -------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        """What this ZFS supports (probed once, then cached; a race only probes twice)."""
        if self._capabilities is None:
            self._capabilities = await probe_capabilities(self.runner)
        return self._capabilities

    async def _require(self, feature: str, argv: Sequence[str]) -> None:
        caps = await self.capabilities()
        if not getattr(caps, feature):
            raise Unsupported(
                f"{caps.implementation} does not support {feature.replace('_', ' ')} "
                f"(needed for `{' '.join(argv)}`)",
                argv=argv,
            )

    # -- reading ------------------------------------------------------------

    async def _get(
        self,
        name: str,
        properties: Sequence[str],
        *,
        recursive: bool = False,
        depth: int | None = None,
    ) -> PropertyTable:
        argv = ["zfs", "get", "-H", "-p", "-o", GET_FIELDS]
        if recursive:
            argv.append("-r")
        if depth is not None:
            argv += ["-d", str(depth)]
        argv += [",".join(properties), name]
        done = await self.runner.run(argv)
        return parse_get(done.stdout_text)

    async def exists(self, name: str) -> bool:
        """Whether the dataset, snapshot or bookmark exists."""
        _validate_any_name(name)
        try:
            await self.runner.run(["zfs", "get", "-H", "-o", "value", "type", name])
        except DatasetNotFound:
            return False
        return True

    async def list_datasets(
        self,
        root: str,
        properties: Sequence[str] = (),
        *,
        recursive: bool = True,
        types: Sequence[str] = ("filesystem",),
    ) -> list[Dataset]:
        """`root` and (recursive) its descendants of the given types, with raw property values.

        One `zfs get` (it has exact -p numbers everywhere); types are filtered
        here because zfs-fuse's `zfs get` has no `-t`.
        """
        validate_dataset_name(root)
        for t in types:
            if t not in _DATASET_TYPES:
                raise InvalidName(
                    f"invalid dataset type {t!r}: use one of {sorted(_DATASET_TYPES)}"
                )
        for prop in properties:
            validate_property_name(prop)
        wanted = ["type", *(p for p in properties if p != "type")]
        table = await self._get(root, wanted, recursive=recursive)
        result: list[Dataset] = []
        for name, props in table.items():
            dtype = props.get("type")
            if dtype is None or dtype.value not in types:
                continue
            values = {p: pv.value for p, pv in props.items() if p in properties and pv.is_set}
            result.append(Dataset(name=name, type=dtype.value, properties=values))
        return result

    async def list_snapshots(self, dataset: str) -> list[Snapshot]:
        """The dataset's own snapshots (not its children's), oldest first."""
        validate_dataset_name(dataset)
        caps = await self.capabilities()
        props = list(
            SNAPSHOT_PROPERTIES
            if caps.createtxg
            else (p for p in SNAPSHOT_PROPERTIES if p != "createtxg")
        )
        if caps.createtxg:
            table = await self._get(dataset, props, recursive=True, depth=1)
            return parse_snapshots(dataset, table)
        # Without createtxg, creation order is the order `zfs list -t snapshot` prints.
        listing = ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", dataset]
        table, done = await asyncio.gather(
            self._get(dataset, props, recursive=True, depth=1), self.runner.run(listing)
        )
        order = [n.split("@", 1)[1] for n in parse_names(done.stdout_text) if "@" in n]
        return parse_snapshots(dataset, table, order=order)

    async def get(self, name: str, properties: Sequence[str]) -> dict[str, str | None]:
        """Raw (-p) values; None for a property that is unset ("-") or not reported."""
        _validate_any_name(name)
        if not properties:
            return {}
        for prop in properties:
            validate_property_name(prop)
        table = await self._get(name, list(properties))
        return {prop: property_or_none(table, name, prop) for prop in properties}

    # -- changing -----------------------------------------------------------

    async def set(self, name: str, properties: Mapping[str, str]) -> None:
        """Set properties. One command on OpenZFS (atomic); one per property on
        zfs-fuse, whose `zfs set` takes a single property=value."""
        _validate_any_name(name)
        _validate_properties(properties)
        if not properties:
            return
        pairs = [f"{k}={v}" for k, v in properties.items()]
        caps = await self.capabilities()
        if caps.implementation == "openzfs":
            await self.runner.run(["zfs", "set", *pairs, name])
            return
        for pair in pairs:
            await self.runner.run(["zfs", "set", pair, name])

    async def inherit(self, name: str, prop: str) -> None:
        """Clear a local value (a user property becomes unset)."""
        _validate_any_name(name)
        validate_property_name(prop)
        await self.runner.run(["zfs", "inherit", prop, name])

    async def create(
        self, name: str, properties: Mapping[str, str] = _EMPTY, *, parents: bool = False
    ) -> None:
        validate_dataset_name(name)
        _validate_properties(properties)
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
        validate_dataset_name(dataset)
        validate_component(snapname, "snapshot name")
        full = validate_snapshot_name(f"{dataset}@{snapname}")
        _validate_properties(properties)
        await self.runner.run(["zfs", "snapshot", *format_properties("-o", properties), full])
        for snap in await self.list_snapshots(dataset):
            if snap.name == snapname:
                return snap
        raise DatasetNotFound(f"snapshot {full!r} vanished right after it was taken")

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

    async def _unmounted_on_zfs_fuse(
        self, name: str, argv: Sequence[str], *, remount_as: str | None
    ) -> None:
        """Run argv; on zfs-fuse with `name` and its descendants unmounted first.

        zfs-fuse says "dataset is busy" (for seconds; once for 45 s) when a
        command has to unmount a filesystem itself (rename, destroy), but
        not when it was unmounted beforehand. On success the datasets are
        mounted again under `remount_as` (None: not at all); on failure
        under their old names.
        """
        if (await self.capabilities()).implementation != "zfs-fuse":
            await self.runner.run(argv)
            return
        mounted = [
            d.name
            for d in await self.list_datasets(name, ["mounted"])
            if d.properties.get("mounted") == "yes"
        ]
        for each in reversed(mounted):  # children before parents
            await self.unmount(each)
        try:
            await self._retry_busy(lambda: self.runner.run(argv))
        except BaseException:
            for each in mounted:
                await self.mount(each)
            raise
        if remount_as is not None:
            for each in mounted:
                await self.mount(remount_as + each[len(name) :])

    async def _retry_busy(self, attempt_once: Callable[[], Awaitable[object]]) -> None:
        """Retry a command that zfs-fuse may call "busy" for a moment after an unmount."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatasetBusy),
            wait=wait_exponential(multiplier=0.05, min=0.05, max=1.0),
            stop=stop_after_delay(MOUNT_RETRY_SECONDS),
            reraise=True,
        ):
            with attempt:
                await attempt_once()

    # -- mounting -----------------------------------------------------------

    async def mount(self, name: str) -> None:
        """Mount; a no-op if already mounted. Retries "busy" for a few seconds
        (zfs-fuse right after an unmount)."""
        validate_dataset_name(name)

        async def once() -> None:
            try:
                await self.runner.run(["zfs", "mount", name])
            except ZfsError as exc:
                # Idempotent, so "run the same command again" finishes a half-done job.
                if "already mounted" not in exc.stderr:
                    raise

        await self._retry_busy(once)

    async def unmount(self, name: str, *, force: bool = False) -> None:
        """Unmount; a no-op if not mounted. Busy (open files, a cwd inside) raises DatasetBusy.

        "Busy" is retried for a few seconds first: zfs-fuse also says so for a
        moment after heavy writes, with nothing holding the mount.
        """
        validate_dataset_name(name)

        async def once() -> None:
            try:
                await self.runner.run(["zfs", "unmount", *(["-f"] if force else []), name])
            except ZfsError as exc:
                if "not currently mounted" not in exc.stderr:
                    raise

        await self._retry_busy(once)

    async def is_mounted(self, name: str) -> bool:
        return (await self.get(name, ["mounted"]))["mounted"] == "yes"

    # -- streams ------------------------------------------------------------

    def send(
        self,
        snapshot: str,
        *,
        base: str | None = None,
        intermediates: bool = False,
        replicate: bool = False,
        props: bool = False,
        resume_token: str | None = None,
    ) -> SendStream:
        """`zfs send` as a stream; use `async with`. Options are checked here, features at start."""
        argv = send_argv(
            snapshot,
            base=base,
            intermediates=intermediates,
            replicate=replicate,
            props=props,
            resume_token=resume_token,
        )

        async def preflight() -> None:
            if resume_token is not None:
                await self._require("resume_tokens", argv)
            if base is not None and "#" in base:
                await self._require("bookmarks", argv)

        return SendStream(self.runner, argv, preflight=preflight)

    def receive(
        self,
        dataset: str,
        *,
        force: bool = False,
        unmounted: bool = False,
        resumable: bool = False,
    ) -> ReceiveStream:
        """`zfs receive` as a stream; use `async with`. `-F` only with force=True."""
        argv = receive_argv(dataset, force=force, unmounted=unmounted, resumable=resumable)

        async def preflight() -> None:
            if unmounted:
                await self._require("receive_unmounted", argv)
            if resumable:
                await self._require("resume_tokens", argv)

        return ReceiveStream(self.runner, argv, preflight=preflight)

    async def estimate_send_size(self, snapshot: str, *, base: str | None = None) -> int | None:
        """Bytes `zfs send` would produce (send -nP), or None where ZFS cannot estimate."""
        argv = send_argv(snapshot, base=base)
        if not (await self.capabilities()).send_estimates:
            return None
        done = await self.runner.run([argv[0], argv[1], "-n", "-P", *argv[2:]])
        return parse_send_estimate(done.stdout_text) or parse_send_estimate(done.stderr_text)

    # -- resume, holds, bookmarks (OpenZFS; see Capabilities) ----------------

    async def resume_token(self, dataset: str) -> str | None:
        """The `receive_resume_token` of a partly received dataset, or None.

        None also where the ZFS has no resumable receive (zfs-fuse): no
        partial receive state can exist there.
        """
        validate_dataset_name(dataset)
        if not (await self.capabilities()).resume_tokens:
            return None
        token = (await self.get(dataset, ["receive_resume_token"]))["receive_resume_token"]
        return token if token and token != "-" else None

    async def describe_resume_token(self, token: str) -> ResumeTokenInfo | None:
        """Decode a resume token (`zfs send -nvt`): which snapshot it completes, from where.

        Works on either side: the contents are printed before ZFS looks for the
        snapshot, so the exit status (non-zero where the snapshot is not local)
        is ignored. None if this ZFS cannot decode it.
        """
        argv = ["zfs", "send", "-n", "-v", "-t", validate_resume_token(token)]
        await self._require("resume_tokens", argv)
        done = await self.runner.run(argv, check=False)
        return parse_resume_token_contents(done.stdout_text)

    async def abort_resumable_receive(self, dataset: str) -> None:
        """Discard the partial state of an interrupted `receive -s` (`zfs receive -A`)."""
        validate_dataset_name(dataset)
        argv = ["zfs", "receive", "-A", dataset]
        await self._require("resume_tokens", argv)
        await self.runner.run(argv)

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
        validate_snapshot_name(snapshot)
        argv = ["zfs", "holds", "-H", snapshot]
        await self._require("holds", argv)
        done = await self.runner.run(argv)
        return sorted(
            fields[1]
            for line in done.stdout_text.splitlines()
            if len(fields := line.split("\t")) >= 2
        )

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

    # -- pools --------------------------------------------------------------

    async def create_pool(
        self,
        name: str,
        vdev: str,
        *,
        mountpoint: str | None = None,
        properties: Mapping[str, str] = _EMPTY,
    ) -> None:
        """`zpool create -f` (properties are pool properties, `-o`)."""
        await _pool.create_pool(
            self.runner, name, vdev, mountpoint=mountpoint, properties=properties
        )

    async def export_pool(self, name: str, *, force: bool = False) -> None:
        """`zpool export` (on zfs-fuse its filesystems are unmounted first; see destroy)."""
        argv = _pool.export_pool_argv(name, force=force)
        await self._unmounted_on_zfs_fuse(name, argv, remount_as=None)

    async def destroy_pool(self, name: str, *, force: bool = False) -> None:
        """`zpool destroy` (on zfs-fuse its filesystems are unmounted first: it
        calls a pool "busy" when the command has to unmount them itself)."""
        argv = _pool.destroy_pool_argv(name, force=force)
        await self._unmounted_on_zfs_fuse(name, argv, remount_as=None)

    async def pool_info(self, name: str) -> PoolInfo:
        """Sizes are exact where `zpool list -p` exists, else rounded as zpool prints them."""
        caps = await self.capabilities()
        return await _pool.pool_info(self.runner, name, parsable=caps.list_parsable)

    async def list_pools(self) -> list[PoolInfo]:
        caps = await self.capabilities()
        return await _pool.list_pools(self.runner, parsable=caps.list_parsable)
