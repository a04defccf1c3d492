"""The source's side of a move, on its own ZFS: fence, unfence, demote, the marker.

Order matters in each step, because a crash can stop it after any command:

* fence:   the marker first (written while the pre-cutover hooks run), then
           `readonly=on`, then (zfs-fuse) unmount. A marker with a writable dataset
           is recovered by rolling back (making sure it is writable, which it
           already is, and running the rollback hooks: the pre-cutover hooks may
           have stopped the consumer).
* unfence: `readonly=off`, mount, then clear the marker: the marker stays
           until the source is whole again, so a crash re-runs the rollback.
* demote:  `zflock:role=replica` first, then unmount, then clear `promoted-by`
           (from this copy's own promotion: a late resolve must not read it as
           "still that move's primary") and the marker.
* stale:   `zflock:stale`, `zflock:role=replica` and `readonly=on` in one write,
           then unmount, then clear the marker: a source that lost to a higher
           epoch (docs/move.md). No hooks run: the consumer must not restart here.

The fence must stop every write before the final snapshot is taken, so that
the snapshot holds every acknowledged write. Which commands do that depends on
the ZFS (`Capabilities.readonly_fences_open_files`; tests/zfs/test_contract.py
checks both behaviours, the OpenZFS one in the OpenZFS tier):

* OpenZFS: `readonly=on` refuses writes even through files opened before it
  (EROFS), and reads "on" while the filesystem stays mounted. The fence is that
  one command; the demotion unmounts, outside the downtime.
* zfs-fuse: `readonly=on` refuses new opens for writing, but a write through a
  descriptor opened before it succeeds, fsync and all. Only the unmount closes
  that door, and it is refused as busy exactly while a process holds the
  filesystem (an open file, a cwd). So the fence is `readonly=on`, then the
  unmount; a source still held after the unmount's own retries (a consumer the
  pre-cutover hooks did not stop) fails the fence, and the move rolls back
  before anything is asked of the destination: a held file could otherwise take
  writes after the final snapshot, acknowledged and then lost. A holder through
  another mount of the filesystem (a container's bind mount in its own mount
  namespace) does not make the unmount busy, and zfs-fuse lets it write on
  after the unmount (tried 2026-12-05): so before the unmount the fence looks for
  processes holding a file open for writing on the filesystem's device
  (zfs/holders.py, a scan of /proc) and fails the same way if it finds one. (Until
  2026-12-05 a busy unmount was only logged, on the belief that the read-only
  mount refused every write.) The unmount cannot wait for the demotion either:
  while mounted, zfs-fuse reports `readonly` as `off` (source `temporary`), so
  every reader of the property (recovery, `zflock ls`, the tests'
  two-writable-copies monitor, an operator's `zfs get`) would see a fenced
  source as writable (tried on 2026-12-05: the monitor caught it in
  tests/move/test_deadlines.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from zflock.cluster.ownership import PROP_ROLE, PROP_STALE, ROLE_REPLICA, Stale
from zflock.errors import ZflockError
from zflock.move.endpoint import SnapTaken
from zflock.move.marker import PROP_MOVE, PROP_PROMOTED_BY, Marker
from zflock.zfs import DatasetBusy, Zfs
from zflock.zfs.holders import describe, device_of, holders
from zflock.zfs.page_cache import drop_cached_pages

log = logging.getLogger("zflock.move")


class SourceInUse(ZflockError):
    """The fenced source could not be unmounted: something still holds it."""


class ZfsSource:
    def __init__(
        self,
        zfs: Zfs,
        dataset: str,
        volume: str,
        take_snapshot: Callable[[], Awaitable[SnapTaken]],
        hooks: Callable[[str], Awaitable[None]],
        mountpoint: str,
    ) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.volume = volume
        self.mountpoint = mountpoint
        self._take_snapshot = take_snapshot
        self._hooks = hooks

    async def snapshot(self) -> SnapTaken:
        return await self._take_snapshot()

    async def run_hooks(self, kind: str) -> None:
        await self._hooks(kind)

    async def set_marker(self, marker: Marker) -> None:
        await self.zfs.set(self.dataset, {PROP_MOVE: marker.format()})

    async def clear_marker(self, why: str) -> None:
        """Clear the marker, and change nothing else (`why` goes to the log)."""
        await self.zfs.inherit(self.dataset, PROP_MOVE)
        log.warning("cleared the move marker: %s", why, extra={"volume": self.volume})

    async def prepare_fence(self) -> None:
        """Before the downtime, what the fence can do ahead of it. On zfs-fuse, where the
        fence unmounts, the volume's pages leave the kernel's page cache now (while the
        consumer still runs), or the unmount evicts them inside the downtime
        (zfs/page_cache.py). Best effort, bounded by page_cache.DROP_BUDGET; a failure
        is logged, never raised: the fence is as safe without it, only slower."""
        if (await self.zfs.capabilities()).readonly_fences_open_files:
            return  # OpenZFS: the fence does not unmount
        device = await device_of(self.mountpoint)
        if device is None:
            return  # not mounted: nothing cached, nothing to unmount
        try:
            dropped = await asyncio.to_thread(drop_cached_pages, self.mountpoint, device)
        except OSError as exc:
            log.warning("could not drop the page cache before the fence: %s", exc,
                        extra={"volume": self.volume})  # fmt: skip
            return
        log.info("before the fence: %s", dropped.describe(), extra={"volume": self.volume})

    async def fence(self) -> None:
        # The marker is on already (the driver writes it while the pre-cutover hooks run).
        await self.zfs.set(self.dataset, {"readonly": "on"})
        log.warning("fenced (read-only)", extra={"volume": self.volume})
        if (await self.zfs.capabilities()).readonly_fences_open_files:
            return  # OpenZFS: fenced already, and it says so; the demotion unmounts
        # After readonly=on no new open for writing succeeds, so the writers can only
        # go: the ones left now are all there will be. Looked for before the unmount,
        # which does not see a writer through another mount (a container's bind
        # mount), and after which a rollback could not mount the source again while
        # that other mount lives (zfs-fuse then reads it as mounted: tried).
        device = await device_of(self.mountpoint)
        if device is not None and (writers := await holders(device, writing=True)):
            raise SourceInUse(
                f"{self.dataset} is still open for writing after fencing, by "
                f"{describe(writers)}: a write after the final snapshot would be lost; "
                "stop every consumer in a pre-cutover hook"
            )
        try:
            await self.zfs.unmount(self.dataset)
        except DatasetBusy:
            # See the module docstring: a held file can still be written.
            raise SourceInUse(
                f"{self.dataset} is still in use after fencing (a process holds a file or "
                "its working directory on it, and a file open for writing could still be "
                "written after the final snapshot); stop every consumer in a pre-cutover "
                "hook (`fuser -vm MOUNTPOINT` lists them)"
            ) from None

    async def unfence(self) -> None:
        await self.zfs.set(self.dataset, {"readonly": "off"})
        # Only if it differs: setting `canmount` remounts the filesystem, which fails
        # while a consumer still holds it (the busy fence this may be rolling back).
        if (await self.zfs.get(self.dataset, ["canmount"]))["canmount"] != "on":
            await self.zfs.set(self.dataset, {"canmount": "on"})
        await self.zfs.mount(self.dataset)
        await self.zfs.inherit(self.dataset, PROP_MOVE)
        log.warning("rolled back: writable and mounted again", extra={"volume": self.volume})

    async def demote(self, *, destroy: bool) -> None:
        await self.zfs.set(self.dataset, {PROP_ROLE: ROLE_REPLICA, "readonly": "on"})
        await self.zfs.set(self.dataset, {"canmount": "noauto"})
        await self.zfs.unmount(self.dataset)  # DatasetBusy: the caller retries
        if destroy:
            await self.zfs.destroy(self.dataset, recursive=True)
            log.warning("destroyed the old source copy", extra={"volume": self.volume})
            return
        await self.zfs.inherit(self.dataset, PROP_PROMOTED_BY)
        await self.zfs.inherit(self.dataset, PROP_MOVE)
        log.info("now a read-only replica", extra={"volume": self.volume})

    async def mark_stale(self, stale: Stale) -> None:
        await self.zfs.set(
            self.dataset, {PROP_STALE: stale.format(), PROP_ROLE: ROLE_REPLICA, "readonly": "on"}
        )
        await self.zfs.set(self.dataset, {"canmount": "noauto"})
        await self.zfs.unmount(self.dataset)  # DatasetBusy: the caller retries
        await self.zfs.inherit(self.dataset, PROP_PROMOTED_BY)
        await self.zfs.inherit(self.dataset, PROP_MOVE)
        log.warning("%s; kept read-only, never re-promoted by this move", stale.describe(),
                    extra={"volume": self.volume})  # fmt: skip
