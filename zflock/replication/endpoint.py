"""The two ends of a replication, as the driver sees them (after zrepl's endpoint).

The driver (driver.py) only talks to a `Sender` and a `Receiver`. The ZFS-
backed implementations are in zfs_sender.py and zfs_endpoint.py; the agent puts an RPC
client in front of a remote node's `Receiver` (zflock/rpc/replica.py), so
the same driver runs whether the destination is local or across the
network, and tests can drive it against real ZFS without agents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from zflock.cluster.ownership import Ownership
from zflock.errors import ZflockError
from zflock.replication.model import (
    Full,
    Incremental,
    Plan,
    PlanOptions,
    ReplicaInfo,
    Resume,
    SnapRef,
    Source,
)


@dataclass(frozen=True)
class SourceIdentity:
    """Who sends: the receiver re-checks every safety rule against it, never trusting the plan."""

    volume: str
    volume_id: str
    epoch: int
    origin: str
    node: str

    @classmethod
    def of(cls, volume: str, ownership: Ownership, node: str) -> SourceIdentity:
        """The identity of `node`'s copy of `volume` (its dataset's name under the pool
        root, which the receiver uses), as its zflock properties describe it."""
        return cls(
            volume=volume,
            volume_id=ownership.id,
            epoch=ownership.epoch,
            origin=ownership.origin,
            node=node,
        )


@dataclass(frozen=True)
class Cleanup:
    """What a plan asks the destination to do before its steps (Plan's items 0-4).

    A request, not an order: the receiver checks each item against its own state
    (replication/admit.py) and refuses what its own rules do not allow. The last
    two fields are what it checks against: the operator's consent and the
    sender's snapshots when it planned (the source is the authority on those).
    """

    abort_partial_receive: bool = False
    recreate: bool = False
    destroy_snapshots: list[SnapRef] = field(default_factory=list)
    rollback_to: SnapRef | None = None
    adopt: bool = False
    force_rollback: bool = False  # --force-rollback: destroying what the source lacks is allowed
    source_snapshots: list[SnapRef] = field(default_factory=list)

    @classmethod
    def from_plan(cls, plan: Plan, source: Source, options: PlanOptions) -> Cleanup:
        return cls(
            abort_partial_receive=plan.abort_partial_receive,
            recreate=plan.recreate_destination,
            destroy_snapshots=list(plan.destroy_on_destination),
            rollback_to=plan.rollback_to,
            adopt=plan.adopt_existing,
            force_rollback=options.force_rollback,
            source_snapshots=list(source.snapshots),
        )

    @property
    def needed(self) -> bool:
        cleanups = (self.adopt, self.abort_partial_receive, self.recreate, self.destroy_snapshots)
        return any(cleanups) or self.rollback_to is not None


@dataclass(frozen=True)
class StepHeader:
    """One stream: what it carries and how the receiver must take it."""

    kind: str  # "full" | "incremental" | "resume"
    to: SnapRef | None  # None for "resume" (the token knows)
    base: SnapRef | None = None
    intermediates: bool = False
    force: bool = False  # `receive -F`: only when the plan authorised a rollback
    resumable: bool = False  # `receive -s`
    token: str | None = None  # for "resume"

    @classmethod
    def from_step(
        cls, step: Full | Incremental | Resume, *, force: bool, resumable: bool
    ) -> StepHeader:
        if isinstance(step, Full):
            return cls(kind="full", to=step.to, force=force, resumable=resumable)
        if isinstance(step, Incremental):
            return cls(
                kind="incremental",
                to=step.to,
                base=step.base,
                intermediates=step.intermediates,
                force=force,
                resumable=resumable,
            )
        return cls(kind="resume", to=None, token=step.token, resumable=True)

    def describe(self) -> str:
        if self.kind == "resume":
            return "resume interrupted stream"
        assert self.to is not None
        if self.kind == "full":
            return f"full @{self.to.name}"
        assert self.base is not None
        return f"incremental @{self.base.name} -> @{self.to.name}"


@dataclass(frozen=True)
class ReceiveResult:
    snapshot: str | None  # the replica's newest snapshot after the receive
    guid: int | None
    bytes: int


class ReplicaModified(ZflockError):
    """The destination refused a receive because its replica was written to after its
    newest snapshot (ZFS: "destination has been modified"). The driver then plans again
    knowing it (rule 12): the only reliable test on a ZFS without `written` (zfs-fuse)."""


@dataclass(frozen=True)
class PruneRequest:
    """A primary asks its replica to prune itself after a sync (a request, not an order).

    `destroy` is what the primary planned from the replica's state as the replica
    reported it; the receiver plans again from its own state, under its volume
    lock, with `keep` and the sender's snapshots (the source is the authority on
    what it has), and refuses the whole request if it asks for anything its own
    decision keeps (retention.admit_prune). `now` is unix seconds: the same clock
    for both sides' grids (the anchor is the newest snapshot, so a wrong clock only
    keeps more).
    """

    keep: str
    now: float
    source_snapshots: list[SnapRef] = field(default_factory=list)
    destroy: list[SnapRef] = field(default_factory=list)


@dataclass(frozen=True)
class PruneAnswer:
    """What the receiver destroyed, its snapshots afterwards (as it lists them), and the
    snapshot its base hold is on (OpenZFS; None where it has no holds)."""

    destroyed: list[SnapRef]
    snapshots: list[SnapRef]
    held: SnapRef | None = None


class Sender(Protocol):
    async def source(self) -> Source: ...

    async def estimate(self, header: StepHeader) -> int | None: ...

    def send(self, header: StepHeader) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...


class Receiver(Protocol):
    async def state(self) -> ReplicaInfo: ...

    async def prepare(self, source: SourceIdentity, cleanup: Cleanup) -> None: ...

    async def receive(
        self, source: SourceIdentity, header: StepHeader, chunks: AsyncIterator[bytes]
    ) -> ReceiveResult: ...


class PrunablePrimary(Protocol):
    """The primary's side of pruning (zfs_sender.ZfsSender)."""

    async def source(self) -> Source: ...

    async def cursors(self) -> dict[str, int]: ...

    async def move_cursor(self, peer: str, to: SnapRef) -> bool: ...

    async def destroy_snapshots(self, refs: list[SnapRef]) -> list[SnapRef]: ...


class PrunableReplica(Protocol):
    """A replica's side of pruning (zfs_endpoint.ZfsReceiver, rpc/replica.RemoteReceiver)."""

    async def state(self) -> ReplicaInfo: ...

    async def prune(self, source: SourceIdentity, request: PruneRequest) -> PruneAnswer: ...
