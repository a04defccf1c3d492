"""A replication link: this node's primary copy of a volume and its replica on one peer.

The one service layer every stream from this agent goes through (docs/design.md,
"Layers"): `zflock replicate` (agent/handlers.py), the scheduler (agent/scheduler.py)
and a move's pre-copy and final delta (agent/move_source.py) each build a link and call
it. None of them opens a client, asks the receiver's state or plans on its own. The
link is transport-free in the sense of the layers: it talks to the peer only through
`rpc` endpoints (RemoteReceiver) and to ZFS only through the replication endpoints.

Interface (stable; other helpers build on it):

    link = ReplicationLink(volume, peer, services)      # services: LinkServices
    result = await link.cycle(job=job)                  # -> LinkResult
        # snapshot -> replicate -> prune, as one cycle, on one connection

    async with link:                                    # connect once (a move)
        replica = link.replica                          # the state read at connect
        link.check()                                    # plan as if snapshotted: refuse now
        snap = await link.snapshot()                    # a move's round: snapshot, then
        outcome = await link.replicate(observer)        # send what exists (no new snapshot)
        result = await link.cycle(job=None)             # or a whole cycle, same connection
        link.client                                     # the open AgentClient (a move's
                                                        # promote uses it too)

`cycle` uses the open connection inside `async with link`; outside, it opens one for
the cycle and closes it after. Between its own steps on one connection the link
remembers what they left on both sides (this copy after its snapshot, the replica
after a plain incremental), so the next step reads neither again; `forget()` when
anything else may have changed them. The caller holds the volume's lock (agent/locks.py)
for as long as it uses the link. `cycle` reports ReplicationFinished or
ReplicationFailed (and StaleCopySeen) to `services.observer`, and every stream's
progress, as StreamProgressed, to it and to the job (if any); `replicate` reports
progress to the observer it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from zflock.agent.jobs import Job
from zflock.agent.link_memory import Carried, after_prune
from zflock.agent.link_prune import prune_after_cycle
from zflock.agent.observing import failure_reason, stale_copy
from zflock.agent.peer_pool import PeerPool
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig, NodeEntry
from zflock.cluster.ownership import Ownership
from zflock.errors import ZflockError
from zflock.events import (
    NO_OBSERVER,
    FanOut,
    Observer,
    ReplicationFailed,
    ReplicationFinished,
    StreamProgressed,
)
from zflock.replication.driver import Outcome, StepProgress, replicate
from zflock.replication.endpoint import SourceIdentity
from zflock.replication.model import PlanOptions, ReplicaInfo
from zflock.replication.plan import plan_replication, with_pending_snapshot
from zflock.replication.pruning import PruneReport
from zflock.replication.zfs_sender import ZfsSender
from zflock.rpc.client import AgentClient
from zflock.rpc.messages import SnapshotInfo
from zflock.rpc.replica import RemoteReceiver
from zflock.zfs import DatasetState, Zfs

log = logging.getLogger("zflock.agent.link")


@dataclass(frozen=True)
class LinkServices:
    """What a link needs of its agent (one per agent, shared by all its links)."""

    config: AgentConfig
    zfs: Zfs
    volumes: Volumes
    host_key: Callable[[], asyncssh.SSHKey | None]  # our identity to peers, once loaded
    observer: Observer = NO_OBSERVER

    def key(self) -> asyncssh.SSHKey:
        key = self.host_key()
        if key is None:
            raise ZflockError("agent has no key to talk to peers")
        return key


@dataclass(frozen=True)
class LinkResult:
    """One cycle: the snapshot taken, what the replication did, and how long it all took."""

    volume: str
    peer: str
    snapshot: SnapshotInfo
    outcome: Outcome
    seconds: float  # connect (if the cycle connected) to the end of the prune step
    pruned: PruneReport | None = None
    carry: Carried | None = None  # both copies as it left them, when known (link_memory.py)


class ReplicationLink:
    """The volume's primary here and its replica on `peer`: see the module docstring."""

    def __init__(
        self,
        volume: str,
        peer: NodeEntry,
        services: LinkServices,
        *,
        ownership: Ownership | None = None,
        carried: Carried | None = None,
        pool: PeerPool | None = None,
    ) -> None:
        self.volume = volume
        self.peer = peer
        self.services = services
        self._ownership = ownership  # read at connect when not given
        # Both copies as the run before left them (agent/link_memory.py): the first
        # connect starts from them instead of reading either.
        self._carried = carried
        self._remembered = False  # this copy's state came from the run before
        # A kept connection to the peer (agent/peer_pool.py), else one per connect.
        self._pool = pool
        config = services.config
        self.sender = ZfsSender(services.zfs, config.dataset(volume), config.node)
        self._client: AgentClient | None = None
        self._receiver: RemoteReceiver | None = None
        self._identity: SourceIdentity | None = None
        self._resume = False  # both sides can resume an interrupted stream
        self.replica = ReplicaInfo(exists=False)  # the peer's copy as read at connect
        # What this link's own steps left on both sides, for its next step on the same
        # connection: the caller holds the volume's lock throughout, so nothing else
        # changes them. This copy as last read (at connect when the caller gave no
        # ownership; after its newest snapshot: ZfsSender.read_adding), and the replica
        # as read at connect or as the last replication's plan tells it
        # (driver.Outcome.replica). None: read, or ask, again. A cycle plans and
        # snapshots from them; a move's rounds too, so its final delta, inside the
        # downtime, reads neither side again (docs/design.md, "One service layer
        # for streams"). The receiver checks every step against its own state, so a
        # wrong guess fails a step; it cannot make one unsafe.
        self._known: DatasetState | None = None
        self._replica_known: ReplicaInfo | None = None

    # -- the connection ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> AgentClient:
        if self._client is None:
            raise RuntimeError("the replication link is not connected")
        return self._client

    @property
    def receiver(self) -> RemoteReceiver:
        if self._receiver is None:
            raise RuntimeError("the replication link is not connected")
        return self._receiver

    async def connect(self) -> None:
        """Check that this copy is the primary, connect, and read the replica's state
        (which also says whether the peer can resume a stream)."""
        config = self.services.config
        ownership = self._ownership
        carried, self._carried = self._carried, None  # once: a later connect reads again
        self.forget()
        self._remembered = carried is not None
        if carried is not None:
            self._known = carried.primary
            ownership = self.sender.ownership_of(carried.primary)
        elif ownership is None:
            self._known = await self.sender.read()
            ownership = self.sender.ownership_of(self._known)
        if not ownership.is_primary:
            raise ZflockError(
                f"node {config.node} holds a {ownership.role} of {self.volume}; "
                "replicate from its primary"
            )
        self._identity = SourceIdentity.of(self.volume, ownership, config.node)
        if self._pool is not None:
            client = await self._pool.client(self.peer)
        else:
            client = AgentClient(self.peer, self.services.key())
            await client.connect()
        try:
            receiver = RemoteReceiver(client, self.volume)
            if carried is not None:
                self.replica = carried.replica
            else:
                self.replica = await receiver.state()
            local = await self.services.zfs.capabilities()
        except BaseException:
            await self._drop(client)
            raise
        self._client, self._receiver = client, receiver
        self._replica_known = self.replica
        if carried is not None:
            self._resume = carried.resume
        else:
            self._resume = local.resume_tokens and receiver.resume_supported

    def forget(self) -> None:
        """Read both sides again at the next step (something else may have changed them)."""
        self._known = self._replica_known = None

    async def close(self, *, failed: bool = False) -> None:
        """Close the connection, or hand a kept one back to the pool (retired if `failed`)."""
        self.forget()
        client, self._client, self._receiver = self._client, None, None
        if client is not None:
            await self._drop(client, failed=failed)

    async def _drop(self, client: AgentClient, *, failed: bool = True) -> None:
        if self._pool is not None:
            await self._pool.release(client, failed=failed)
        else:
            await client.close()

    async def __aenter__(self) -> ReplicationLink:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.close(failed=exc_type is not None)

    # -- the steps --------------------------------------------------------------------

    def options(self, *, force_rollback: bool = False) -> PlanOptions:
        return PlanOptions(force_rollback=force_rollback, resume_supported=self._resume)

    async def check(
        self, *, force_rollback: bool = False, read: DatasetState | None = None
    ) -> None:
        """Plan as if a new snapshot were taken now, against the replica as read at
        connect: a conflict refuses here, before anything changes on either side.
        `read`: this copy as just read (else read here)."""
        source = self.sender.source_of(read or await self.sender.read())
        options = self.options(force_rollback=force_rollback)
        plan_replication(with_pending_snapshot(source), self.replica, options)

    async def replicate(
        self, observer: Observer = NO_OBSERVER, *, force_rollback: bool = False
    ) -> Outcome:
        """Send what the replica lacks of the snapshots that exist (no new one). The
        first round's plan (replication.driver.replicate) starts from what the link
        knows of both sides (see __init__); a side it knows nothing of is read there."""
        assert self._identity is not None, "connect() first"
        volume = self.volume
        read, replica = self._known, self._replica_known
        self._replica_known = None  # until this replication says what it left

        def report(p: StepProgress) -> None:
            observer.emit(StreamProgressed(volume, p.step, p.bytes, p.total, p.rate))

        options = self.options(force_rollback=force_rollback)
        source = self.sender.source_of(read) if read is not None else None
        outcome = await replicate(
            self.sender, self.receiver, self._identity, options, report,
            source=source, destination=replica,
        )  # fmt: skip
        self._replica_known = outcome.replica
        return outcome

    async def snapshot(self) -> SnapshotInfo:
        """Snapshot this copy from what the link knows of it (read when nothing), and
        know it as read after the snapshot, with that snapshot only
        (ZfsSender.read_adding): a move's round, whose replication follows."""
        before = self._known or await self.sender.read()
        self._known = None  # until the new read: a failure below leaves it unknown
        volumes = self.services.volumes
        taken = await volumes.snapshot_known(self.volume, before)
        after = await self.sender.read_adding(before, taken)
        self._known = after
        return volumes.snapshot_info(self.volume, after, taken)

    async def prune(
        self,
        read: DatasetState | None = None,
        replica: ReplicaInfo | None = None,
        *,
        remembered: bool = False,
    ) -> PruneReport:
        """Prune the peer's replica and this primary after a sync (agent/link_prune.py).
        `read`: this copy as read since its last change (else read there); `replica`:
        the peer's as the sync left it (else asked there); `remembered`: `read` builds
        on what the run before left (read again before anything is destroyed)."""
        assert self._identity is not None, "connect() first"
        services = self.services
        return await prune_after_cycle(
            services.config, services.key, self.sender, self.receiver,
            self._identity, self.peer.name, read=read, replica=replica,
            remembered=remembered,
        )  # fmt: skip

    async def cycle(self, *, job: Job | None, force_rollback: bool = False) -> LinkResult:
        """Snapshot, replicate, prune: one run of the link (see the module docstring)."""
        started = time.monotonic()
        try:
            if self.connected:
                result = await self._cycle(job, force_rollback, started, fresh=False)
            else:
                async with self:
                    result = await self._cycle(job, force_rollback, started, fresh=True)
        except BaseException as exc:
            observer = self.services.observer
            observer.emit(ReplicationFailed(self.volume, self.peer.name, failure_reason(exc)))
            if (stale := stale_copy(self.volume, exc)) is not None:
                observer.emit(stale)
            raise
        outcome = result.outcome
        self.services.observer.emit(
            ReplicationFinished(
                volume=self.volume, peer=self.peer.name, bytes=outcome.bytes,
                seconds=result.seconds, stream_seconds=sum(s.seconds for s in outcome.steps),
                snapshot_time=result.snapshot.creation, finished_at=time.time(),
            )
        )  # fmt: skip
        return result

    async def _cycle(
        self, job: Job | None, force_rollback: bool, started: float, *, fresh: bool
    ) -> LinkResult:
        """One cycle on this connection. `fresh`: the cycle connected just now, so both
        copies as read at connect are current (the caller holds the volume's lock);
        otherwise an earlier use of the connection may have changed them.

        This copy is read twice in all, before and after the snapshot (the second
        time with the new snapshot only: ZfsSender.read_adding), and each read serves
        every step after it; the replica's state at connect is the first round's (the
        receiver checks each step against its own state)."""
        if not fresh:
            self.forget()
        if self._known is None:
            self._known = await self.sender.read()
            self._remembered = False
        await self.check(force_rollback=force_rollback, read=self._known)
        watcher: Observer = self.services.observer
        if job is not None:
            job.step = "snapshot"
            watcher = FanOut([job, watcher])
        snap = await self.snapshot()
        after = self._known
        outcome = await self.replicate(watcher, force_rollback=force_rollback)
        if job is not None:
            job.step = "prune"
        self.forget()  # the prune changes both sides
        pruned = await self.prune(after, outcome.replica, remembered=self._remembered)
        carry = None
        listed = pruned.replica_snapshots
        if after is not None and outcome.replica is not None and listed is not None:
            if not pruned.errors:  # what each side destroyed is then known exactly
                carry = after_prune(
                    after, pruned.primary.destroyed, outcome.replica, list(listed), self._resume
                )
        return LinkResult(
            volume=self.volume, peer=self.peer.name, snapshot=snap, outcome=outcome,
            seconds=time.monotonic() - started, pruned=pruned, carry=carry,
        )  # fmt: skip
