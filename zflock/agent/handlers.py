"""Request handlers: one coroutine per operation of the protocol.

Each handler receives the decoded argument dataclass and a `Call` (the
peer's identity and a way to send progress events) and returns the result
dataclass. Locking per volume happens here so that every operation on a
volume, whatever it is, goes through the same gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from zflock import __version__
from zflock.agent.jobs import Job, Jobs
from zflock.agent.link import LinkResult, LinkServices, ReplicationLink
from zflock.agent.locks import VolumeLocks
from zflock.agent.moves import Moves
from zflock.agent.names import Names
from zflock.agent.observing import copies_listed
from zflock.agent.policies import Policies
from zflock.agent.prune_replica import ReplicaPruning
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig, load_inventory, validate_node_name
from zflock.errors import UsageError
from zflock.events import NO_OBSERVER, Observer
from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.replication.zfs_endpoint import ZfsReceiver
from zflock.rpc import messages as m
from zflock.rpc.client import WINDOW
from zflock.rpc.framing import PROTOCOL_VERSION
from zflock.rpc.replica import replica_state
from zflock.zfs import Zfs, validate_component

log = logging.getLogger("zflock.agent")
# Reads must take at least the SSH channel's window at a time.
# asyncssh 2.24 grants the sender a whole new window whenever it hands the
# reader a packet from its paused backlog, without counting that backlog; a
# reader that takes less than a window per read lets the backlog grow by up
# to a window per read (measured: 70 MiB held, RSS 370 MB, for a 1 GiB
# stream with 256 KiB reads and a 2 MiB window). Draining the whole buffer
# each time keeps the backlog under a window (docs/design.md, "Memory").
CHUNK = 2 * WINDOW


@dataclass
class Call:
    peer: str
    send_event: Callable[[dict[str, Any]], Awaitable[None]]
    # The raw payload after the request line (data operations only).
    read: Callable[[int], Awaitable[bytes]] | None = None


class Handlers:
    def __init__(
        self, config: AgentConfig, zfs: Zfs, locks: VolumeLocks, observer: Observer = NO_OBSERVER
    ) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.observer = observer
        self.volumes = Volumes(config, zfs)
        self.jobs = Jobs(observer)
        self.started = time.monotonic()
        self.running = 0  # operations in flight, for node_info and shutdown
        self.peer_key: asyncssh.SSHKey | None = None  # our host key, our identity to peers
        # Every stream to a peer goes through a ReplicationLink built on these.
        self.links = LinkServices(config, zfs, self.volumes, lambda: self.peer_key, observer)
        self.moves = Moves(self.links, locks, self.jobs)
        self.names = Names(config, zfs, self.volumes, locks, lambda: self.peer_key)
        self.policies = Policies(config, zfs, self.volumes, locks, lambda: self.peer_key)
        self.pruning = ReplicaPruning(config, zfs, locks)

    def table(self) -> dict[str, Callable[[Any, Call], Awaitable[Any]]]:
        return {
            "node_info": self.node_info,
            "list_volumes": self.list_volumes,
            "create_volume": self.create_volume,
            "reserve_name": self.names.reserve_name,
            "release_name": self.names.release_name,
            "set_policy": self.policies.set_policy,
            "destroy_volume": self.destroy_volume,
            "snapshot_volume": self.snapshot_volume,
            "replica_state": self.replica_state,
            "prepare_replica": self.prepare_replica,
            "receive_snapshot": self.receive_snapshot,
            "replicate": self.replicate,
            "jobs": self.list_jobs,
            "move": self.move,
            "promote_replica": self.promote_replica,
            "resolve_move": self.resolve_move,
            "prune_replica": self.pruning.prune_replica,
            "store_policy_copy": self.pruning.store_policy_copy,
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
            running_jobs=len(self.jobs.running()),
            client_hooks=self.config.allow_client_hooks,
        )

    async def list_volumes(self, args: m.ListVolumes, call: Call) -> m.VolumeList:
        volumes = await self.volumes.list(args.names)
        if not args.names:  # a full listing: what is fenced here now (metrics)
            self.observer.emit(copies_listed(volumes))
        return m.VolumeList(volumes=volumes)

    async def create_volume(self, args: m.CreateVolume, call: Call) -> m.VolumeInfo:
        # Only once every node has reserved the name for us (agent/names.py).
        return await self.names.create(args.name, args.quota, wait=args.wait)

    async def destroy_volume(self, args: m.DestroyVolume, call: Call) -> m.Destroyed:
        name = validate_component(args.name, "volume name")
        async with self.locks.hold(name, "destroy", wait=args.wait):
            return await self.volumes.destroy(name, force=args.force)

    async def snapshot_volume(self, args: m.SnapshotVolume, call: Call) -> m.SnapshotInfo:
        name = validate_component(args.name, "volume name")
        async with self.locks.hold(name, "snapshot", wait=args.wait):
            return await self.volumes.snapshot(name)

    # -- replication: the destination side --------------------------------------------

    def _receiver(self, name: str) -> ZfsReceiver:
        name = validate_component(name, "volume name")
        return ZfsReceiver(
            self.zfs, self.config.dataset(name), self.config.mountpoint(name), self.config.node
        )

    async def replica_state(self, args: m.ReplicaStateRequest, call: Call) -> m.ReplicaState:
        info = await self._receiver(args.name).state()
        caps = await self.zfs.capabilities()
        return replica_state(info, resume_supported=caps.resume_tokens)

    async def prepare_replica(self, args: m.PrepareReplica, call: Call) -> m.Empty:
        receiver = self._receiver(args.source.volume)
        async with self.locks.hold(args.source.volume, "prepare replica", wait=False):
            await receiver.prepare(args.source, args.cleanup)
        return m.Empty()

    async def receive_snapshot(self, args: m.ReceiveSnapshot, call: Call) -> m.Received:
        receiver = self._receiver(args.source.volume)
        read = call.read
        assert read is not None

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await read(CHUNK):
                yield chunk

        async with self.locks.hold(args.source.volume, "receive", wait=False):
            result = await receiver.receive(args.source, args.header, chunks())
        log.info(
            "received %s (%d bytes) from %s",
            args.header.describe(),
            result.bytes,
            args.source.node,
            extra={"volume": args.source.volume},
        )
        return m.Received(snapshot=result.snapshot, guid=result.guid, bytes=result.bytes)

    # -- replication: the source side, as a job ------------------------------------------

    async def replicate(self, args: m.Replicate, call: Call) -> m.ReplicationReport:
        name = validate_component(args.name, "volume name")
        target = validate_node_name(args.to)
        if target == self.config.node:
            raise UsageError(f"{name} is on {target} already; replicate it to another node")
        peer = load_inventory(self.config.cluster).node(target)
        await self.volumes.ownership(name)  # not found / not ours: fail before any job
        await self.locks.acquire(name, f"replicate to {target}", wait=args.wait)
        job = Job(kind="replicate", volume=name, node=self.config.node, target=target)

        link = ReplicationLink(name, peer, self.links)

        async def run(job: Job) -> m.ReplicationReport:
            try:
                result = await link.cycle(job=job, force_rollback=args.force_rollback)
                return replication_report(result, self.config.node)
            finally:
                self.locks.release(name)

        self.jobs.start(job, run)
        return await self.jobs.follow(job, call.send_event)

    # -- moves (zflock/agent/moves.py) ----------------------------------------------------

    async def move(self, args: m.Move, call: Call) -> m.MoveReport:
        report: m.MoveReport = await self.moves.move(args, call.send_event)
        return report

    async def promote_replica(self, args: PromoteRequest, call: Call) -> Promotion:
        return await self.moves.promote(args)

    async def resolve_move(self, args: m.ResolveMove, call: Call) -> m.MoveResolution:
        return await self.moves.resolve(args)

    async def list_jobs(self, args: m.Empty, call: Call) -> m.JobList:
        return m.JobList(jobs=[j.info() for j in self.jobs.all()])


def replication_report(result: LinkResult, source: str) -> m.ReplicationReport:
    """A cycle's result on the wire, for the client that asked for it."""
    outcome = result.outcome
    steps = [
        m.StepReport(
            kind=s.header.kind,
            snapshot=s.header.to.name if s.header.to else None,
            base=s.header.base.name if s.header.base else None,
            bytes=s.result.bytes,
            seconds=round(s.seconds, 3),
        )
        for s in outcome.steps
    ]
    return m.ReplicationReport(
        volume=result.volume,
        source=source,
        destination=result.peer,
        snapshot=result.snapshot.snapshot,
        guid=result.snapshot.guid,
        up_to_date=outcome.up_to_date,
        steps=steps,
        bytes=outcome.bytes,
        seconds=round(result.seconds, 3),
        warnings=outcome.warnings,
    )
