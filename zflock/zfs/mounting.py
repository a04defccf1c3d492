"""Mounting, and zfs-fuse's "busy" after an unmount (retried, bounded)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from zflock.zfs.core import ZfsCore
from zflock.zfs.errors import DatasetBusy, ZfsError
from zflock.zfs.names import validate_dataset_name

# zfs-fuse refuses `zfs mount` for about a second after `zfs unmount` of the
# same dataset ("mountpoint or dataset is busy"); retry for a few seconds.
MOUNT_RETRY_SECONDS = 3.0


class MountOps(ZfsCore):
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
