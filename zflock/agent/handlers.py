"""Request handlers: one coroutine per operation of the protocol.

Each handler receives the decoded argument dataclass and a `Call` (the
peer's identity and a way to send progress events) and returns the result
dataclass. Locking per volume happens here so that every operation on a
volume, whatever it is, goes through the same gate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from zflock import __version__
from zflock.agent.locks import VolumeLocks
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig
from zflock.rpc import messages as m
from zflock.rpc.framing import PROTOCOL_VERSION
from zflock.zfs import Zfs, validate_component


@dataclass
class Call:
    peer: str
    send_event: Callable[[dict[str, Any]], Awaitable[None]]


class Handlers:
    def __init__(self, config: AgentConfig, zfs: Zfs, locks: VolumeLocks) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.volumes = Volumes(config, zfs)
        self.started = time.monotonic()
        self.running = 0  # operations in flight, for node_info and shutdown

    def table(self) -> dict[str, Callable[[Any, Call], Awaitable[Any]]]:
        return {
            "node_info": self.node_info,
            "list_volumes": self.list_volumes,
            "create_volume": self.create_volume,
            "destroy_volume": self.destroy_volume,
            "snapshot_volume": self.snapshot_volume,
        }

    async def node_info(self, args: m.Empty, call: Call) -> m.NodeInfo:
        caps = await self.zfs.capabilities()
        pool = await self.zfs.pool_info(self.config.pool_root.split("/", 1)[0])
        flags = {
            name: bool(getattr(caps, name))
            for name in (
                "resume_tokens",
                "receive_unmounted",
                "holds",
                "bookmarks",
                "send_estimates",
                "createtxg",
            )
        }
        return m.NodeInfo(
            node=self.config.node,
            agent_version=__version__,
            protocol=PROTOCOL_VERSION,
            zfs_implementation=caps.implementation,
            zfs_version=caps.version,
            capabilities=flags,
            pool_root=self.config.pool_root,
            mount_root=self.config.mount_root,
            pool_size=pool.size,
            pool_free=pool.free,
            uptime_s=round(time.monotonic() - self.started, 3),
            running_jobs=max(self.running - 1, 0),  # not counting this request
        )

    async def list_volumes(self, args: m.ListVolumes, call: Call) -> m.VolumeList:
        return m.VolumeList(volumes=await self.volumes.list(args.names))

    async def create_volume(self, args: m.CreateVolume, call: Call) -> m.VolumeInfo:
        name = validate_component(args.name, "volume name")
        async with self.locks.hold(name, "create", wait=args.wait):
            return await self.volumes.create(name, args.quota)

    async def destroy_volume(self, args: m.DestroyVolume, call: Call) -> m.Destroyed:
        name = validate_component(args.name, "volume name")
        async with self.locks.hold(name, "destroy", wait=args.wait):
            return await self.volumes.destroy(name, force=args.force)

    async def snapshot_volume(self, args: m.SnapshotVolume, call: Call) -> m.SnapshotInfo:
        name = validate_component(args.name, "volume name")
        async with self.locks.hold(name, "snapshot", wait=args.wait):
            return await self.volumes.snapshot(name)
