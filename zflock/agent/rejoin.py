"""The `rejoin` operation: this node's stale copy becomes a replica of the primary again.

The plan is pure (zflock/cluster/divergence.py, docs/failover.md "Rejoin").
Here, under the volume's lock:

1. read this copy, and ask the primary's agent for its copy and snapshots;
2. a copy still marked primary (fenced) gets a `zflock-diverged-<time>`
   snapshot first, so that its newest state is a snapshot;
3. **preserve** before destroying anything: the newest diverged snapshot is
   copied whole (`zfs send | zfs receive` on this node) into
   `<volume>-diverged-<time>`, read-only, unmounted, with no zflock:volume (so
   no listing takes it for a copy) and `zflock:diverged-from=<volume>/<id>/<epoch>`;
   its snapshot's GUID must equal the original's. With `--reseed` the whole
   dataset is renamed there instead;
4. roll back to the newest common snapshot (destroying the diverged ones),
   clear the stale and fenced labels: an ordinary read-only replica;

then, with the lock released, ask the primary to `replicate` to this node:
incremental from the common snapshot (or in full after a reseed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncssh

from zflock.agent.locks import VolumeLocks
from zflock.agent.volumes import VolumeNotFound, Volumes
from zflock.cluster.config import AgentConfig, NodeEntry, load_inventory, validate_node_name
from zflock.cluster.divergence import (
    PROP_DIVERGED_FROM,
    Copy,
    RejoinPlan,
    RejoinRefused,
    Snap,
    check_copies,
    diverged_dataset,
    plan_rejoin,
)
from zflock.cluster.lease import PROP_FENCED, diverged_name
from zflock.cluster.ownership import PROP_ID, PROP_ROLE, PROP_STALE, PROP_VOLUME, ROLE_REPLICA
from zflock.errors import UsageError, ZflockError
from zflock.move.marker import PROP_MOVE
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.selffence_messages import Rejoin, RejoinReport
from zflock.zfs import Zfs, validate_component
from zflock.zfs.streams import pipe

log = logging.getLogger("zflock.agent.rejoin")


class Rejoiner:
    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        locks: VolumeLocks,
        volumes: Volumes,
        peer_key: Callable[[], asyncssh.SSHKey | None],
    ) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.volumes = volumes
        self._peer_key = peer_key

    def operations(self) -> dict[str, Callable[[Any, Any], Any]]:
        return {"rejoin": self.rejoin}

    def _key(self) -> asyncssh.SSHKey:
        key = self._peer_key()
        if key is None:
            raise ZflockError("agent has no key to talk to peers")
        return key

    async def rejoin(self, args: Rejoin, call: object) -> RejoinReport:
        name = validate_component(args.name, "volume name")
        primary = validate_node_name(args.primary)
        me = self.config.node
        if primary == me:
            raise UsageError(f"{me} cannot rejoin itself: name the node of the current primary")
        entry = load_inventory(self.config.cluster).node(primary)
        started = time.monotonic()
        async with self.locks.hold(name, "rejoin", wait=False):
            plan, epoch, preserved, discarded = await self._prepare(name, entry, args)
        # The lock is free again: the primary's stream takes it on this side.
        async with AgentClient(entry, self._key()) as client:
            report: m.ReplicationReport = await client.call(
                "replicate", m.Replicate(name=name, to=me)
            )
        log.warning("rejoined as a replica of %s (%s, %d bytes)", primary, plan.mode,
                    report.bytes, extra={"volume": name})  # fmt: skip
        return RejoinReport(
            volume=name, node=me, primary=primary, epoch=epoch,
            common=plan.common.name if plan.common else None, preserved=preserved,
            discarded=discarded, mode=plan.mode, bytes=report.bytes,
            seconds=round(time.monotonic() - started, 3), warnings=report.warnings,
        )  # fmt: skip

    async def _prepare(
        self, name: str, entry: NodeEntry, args: Rejoin
    ) -> tuple[RejoinPlan, int, str | None, list[str]]:
        """Steps 1-4 of the module docstring (volume lock held)."""
        dataset = self.config.dataset(name)
        try:
            info = await self.volumes.get(name)
        except VolumeNotFound:
            raise RejoinRefused(f"no copy of {name} on {self.config.node}") from None
        async with AgentClient(entry, self._key()) as client:
            listed: m.VolumeList = await client.call("list_volumes", m.ListVolumes(names=[name]))
            theirs = [c for c in listed.volumes if c.name == name]
            remote = await self._remote_snapshots(client, name) if theirs else []
        local = Copy(self.config.node, info.id, info.role, info.epoch, stale=bool(info.stale))
        other = (
            Copy(entry.name, theirs[0].id, theirs[0].role, theirs[0].epoch, bool(theirs[0].stale))
            if theirs
            else None
        )
        check_copies(name, local, other)
        assert other is not None
        if info.role != ROLE_REPLICA and not args.discard_diverged:
            # A fenced primary may hold writes after its last snapshot: make them one.
            await self.zfs.set(dataset, {"readonly": "on"})
            await self.zfs.snapshot(dataset, diverged_name(datetime.now(UTC)))
        snaps = [Snap(s.name, s.guid) for s in await self.zfs.list_snapshots(dataset)]
        plan = plan_rejoin(name, snaps, remote, reseed=args.reseed, discard=args.discard_diverged)
        label = f"{name}/{info.id}/{other.epoch}"
        aside = diverged_dataset(self.config.pool_root, name, datetime.now(UTC))
        discarded = [s.name for s in plan.diverged] if args.discard_diverged else []
        if plan.mode == "reseed":
            if await self.zfs.is_mounted(dataset):
                await self.zfs.unmount(dataset)
            if plan.keep_dataset:
                await self.zfs.rename(dataset, aside)
                await self._set_aside(aside, label)
                return plan, other.epoch, aside, []
            await self.zfs.destroy(dataset, recursive=True)
            return plan, other.epoch, None, [dataset]
        preserved = None
        if plan.preserve is not None:
            preserved = await self._preserve(dataset, plan.preserve, aside, label)
        assert plan.common is not None
        if await self.zfs.is_mounted(dataset):
            await self.zfs.unmount(dataset)
        await self.zfs.rollback(dataset, plan.common.name, destroy_newer=True)
        await self.zfs.set(
            dataset, {PROP_ROLE: ROLE_REPLICA, "readonly": "on", "canmount": "noauto"}
        )
        for prop in (PROP_STALE, PROP_FENCED, PROP_MOVE):
            await self.zfs.inherit(dataset, prop)
        log.warning("rolled back to @%s (%d diverged snapshot(s) %s)", plan.common.name,
                    len(plan.diverged), "discarded" if args.discard_diverged else "preserved",
                    extra={"volume": name})  # fmt: skip
        return plan, other.epoch, preserved, discarded

    async def _remote_snapshots(self, client: AgentClient, name: str) -> list[Snap]:
        state: m.ReplicaState = await client.call("replica_state", m.ReplicaStateRequest(name=name))
        return [Snap(s.name, s.guid) for s in state.snapshots]

    async def _preserve(self, dataset: str, snap: Snap, aside: str, label: str) -> str:
        """Copy `snap` whole into `aside`; refuse to go on unless it arrived intact."""
        copied = await pipe(self.zfs.send(f"{dataset}@{snap.name}"), self.zfs.receive(aside))
        kept = await self.zfs.list_snapshots(aside)
        if not kept or kept[-1].guid != snap.guid:
            raise ZflockError(
                f"the copy of @{snap.name} in {aside} is not intact; nothing was rolled back"
            )
        await self._set_aside(aside, label)
        log.warning("diverged data of @%s kept in %s (%d bytes)", snap.name, aside, copied)
        return aside

    async def _set_aside(self, aside: str, label: str) -> None:
        """Read-only, unmounted, not a copy of the volume any more, labelled for people."""
        await self.zfs.set(aside, {"readonly": "on", "canmount": "noauto"})
        if await self.zfs.is_mounted(aside):
            await self.zfs.unmount(aside)
        await self.zfs.set(aside, {"mountpoint": "none"})  # never over the volume's path
        await self.zfs.set(aside, {PROP_DIVERGED_FROM: label})
        for prop in (PROP_VOLUME, PROP_ID, PROP_ROLE, PROP_STALE, PROP_FENCED):
            await self.zfs.inherit(aside, prop)
