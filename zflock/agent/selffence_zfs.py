"""What self-fencing does to one copy on this node's ZFS: fence, unfence, mark stale.

The order of each step matters, because the agent can die after any command
(docs/failover.md, "Self-fencing"):

* fence:   `zflock:fenced` and `readonly=on` in one write first -- on OpenZFS
           from here no write succeeds, and a slow stop hook cannot stretch the
           bound a failover counts on -- then the `pre_cutover` (stop) hook, the
           unmount, then `canmount=noauto` (after it: on zfs-fuse setting
           canmount remounts, which a holder refuses). On zfs-fuse a file held
           open for writing can still be written after readonly=on, through the
           mount or another (a bind mount): the processes holding one are stopped
           first, and those holding the mount when the unmount is refused
           (zfs/holders.py; `[failover] stop_holders`), then it is tried again.
           Repeating it is harmless.
* unfence: `readonly=off`, `canmount=on`, mount, and only then the label is
           cleared: a crash before that leaves it fenced, to be decided again.
           Then the `rollback` hook (restart the consumer).
* stale:   fenced first, then the `zflock-diverged-<time>` snapshot (after the
           fence: it holds every write the copy acknowledged), then the stale
           label, role `replica`, in one write, then the fence label goes.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from zflock.agent.hooks import HookFailed, run_hooks
from zflock.cluster.config import AgentConfig
from zflock.cluster.lease import PROP_FENCED, Fenced, FenceReason, LocalCopy, diverged_name
from zflock.cluster.ownership import PROP_ROLE, PROP_STALE, ROLE_REPLICA, Stale
from zflock.move.marker import PROP_MOVE, PROP_PROMOTED_BY
from zflock.zfs import DatasetBusy, Zfs
from zflock.zfs.holders import describe, device_of, holders, stop

log = logging.getLogger("zflock.agent.selffence")


class CopyFencing:
    def __init__(self, config: AgentConfig, zfs: Zfs) -> None:
        self.config = config
        self.zfs = zfs

    def _context(self, name: str, epoch: int, reason: str) -> dict[str, str]:
        return {
            "volume": name, "mountpoint": self.config.mountpoint(name),
            "source": self.config.node, "destination": "", "epoch": str(epoch),
            "reason": reason,
        }  # fmt: skip

    async def _hooks(self, name: str, kind: str, epoch: int, reason: str) -> None:
        hooks = self.config.hooks_for(name)
        command = getattr(hooks, kind)
        if not command:
            return
        try:
            await run_hooks(kind, [command], self._context(name, epoch, reason), hooks.timeout)
        except HookFailed as exc:
            log.error("%s", exc, extra={"volume": name})

    async def fence(self, copy: LocalCopy, reason: FenceReason) -> None:
        dataset = self.config.dataset(copy.name)
        first = copy.fenced is None
        label = copy.fenced or Fenced(reason, int(time.time()))
        await self.zfs.set(dataset, {PROP_FENCED: label.format(), "readonly": "on"})
        if first:
            log.warning("self-fenced: %s", label.describe(), extra={"volume": copy.name})
            await self._hooks(copy.name, "pre_cutover", copy.epoch, f"self-fence: {reason}")
        await self._unmount(dataset, copy.name)

    async def _unmount(self, dataset: str, name: str) -> None:
        """Where only this makes the fence whole (zfs-fuse), first stop every process
        still holding a file open for writing on it, through this mount or another (a
        container's bind mount), then unmount, stopping what still holds it if that is
        refused (zfs/holders.py). Then `canmount=noauto`, so that nothing mounts it
        again by itself."""
        fences = (await self.zfs.capabilities()).readonly_fences_open_files
        device = None if fences else await device_of(self.config.mountpoint(name))
        # After readonly=on no new open for writing succeeds: the writers found now are
        # all there will be, and once they are gone the copy is fenced (fence_time).
        writers = [] if device is None else await holders(device, writing=True)
        if device is not None and writers:
            if self._may_stop(name, "still open for writing"):
                stopped = await stop(device, writers, writing=True)
                log.error("fenced, but still open for writing (through its mount or another: "
                          "a container's bind mount?): stopped %s", describe(stopped),
                          extra={"volume": name})  # fmt: skip
        try:
            await self.zfs.unmount(dataset)
        except DatasetBusy:
            if fences or device is None:
                log.warning("fenced (read-only), but still in use, so still mounted: "
                            "unmounted on a later tick", extra={"volume": name})  # fmt: skip
                return
            if not self._may_stop(name, "in use, so still mounted"):
                return
            stopped = await stop(device)
            log.error("fenced, but still in use: stopped the processes holding it: %s",
                      describe(stopped), extra={"volume": name})  # fmt: skip
            await self.zfs.unmount(dataset)  # DatasetBusy: the next tick tries again
        if (await self.zfs.get(dataset, ["canmount"]))["canmount"] != "noauto":
            await self.zfs.set(dataset, {"canmount": "noauto"})

    def _may_stop(self, name: str, what: str) -> bool:
        if self.config.failover.stop_holders:
            return True
        log.error("fenced, but %s: on zfs-fuse a file held open for writing can still be "
                  "written; stop its consumer ([failover] stop_holders is off)", what,
                  extra={"volume": name})  # fmt: skip
        return False

    async def unfence(self, copy: LocalCopy) -> None:
        dataset = self.config.dataset(copy.name)
        await self.zfs.set(dataset, {"readonly": "off", "canmount": "on"})
        if not await self.zfs.is_mounted(dataset):
            await self.zfs.mount(dataset)
        await self.zfs.inherit(dataset, PROP_FENCED)
        log.warning("unfenced: a majority answers and no node has a higher epoch",
                    extra={"volume": copy.name})  # fmt: skip
        await self._hooks(copy.name, "rollback", copy.epoch, "self-fence lifted")

    async def mark_stale(self, copy: LocalCopy, epoch: int) -> None:
        dataset = self.config.dataset(copy.name)
        if copy.fenced is None:
            await self.fence(copy, "epoch-unknown")
        snap = await self.zfs.snapshot(dataset, diverged_name(datetime.now(UTC)))
        stale = Stale(epoch, "failed-over", "")
        await self.zfs.set(
            dataset, {PROP_STALE: stale.format(), PROP_ROLE: ROLE_REPLICA, "readonly": "on"}
        )
        await self.zfs.inherit(dataset, PROP_FENCED)  # the stale label says it all now
        for prop in (PROP_PROMOTED_BY, PROP_MOVE):
            await self.zfs.inherit(dataset, prop)
        log.warning("%s: @%s", stale.describe(), snap.name, extra={"volume": copy.name})
        await self._unmount(dataset, copy.name)
