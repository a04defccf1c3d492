"""Pruning after a successful sync, on the replica and on the primary (issue 11 item 3).

`prune_after_sync` runs at the end of every replication cycle, on the primary,
holding the volume's lock. It decides with retention.py (pure) and executes
through the endpoints (endpoint.PrunablePrimary, endpoint.PrunableReplica):

1. The replica just synced reports its state; the primary plans its pruning
   under `keep_replica`, with the primary's snapshots as its peer, and sends
   the plan as a request (`prune_replica`). The receiver plans again from its
   own state under its own lock and refuses the whole request if it asks for
   anything its decision keeps; otherwise it moves its base hold (OpenZFS) and
   destroys what was asked. Its answer lists its snapshots afterwards.
2. The primary moves that replica's cursor bookmark (OpenZFS) to the newest
   snapshot the answer shows they share: confirmed by the receiver, not planned.
3. The primary prunes itself under `keep`, with EVERY replica as a peer: the
   one just synced as its answer lists it, every other target of the policy as
   it reports its state now. A target that cannot be asked keeps everything that
   could still be its base (retention.protect_unasked: from its cursor on, or
   everything where there is none); a volume with no policy (`targets` None: one
   `zflock replicate`) does not prune its primary at all, since nothing lists
   its replicas. A snapshot a replica's resumable stream still needs stays.

Failures of either side are recorded in the report and logged, never raised:
the data was replicated, and a prune that could not run keeps more, never less.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from zflock.errors import ZflockError
from zflock.replication.endpoint import (
    PrunablePrimary,
    PrunableReplica,
    PruneRequest,
    SourceIdentity,
)
from zflock.replication.history import diff
from zflock.replication.model import ReplicaInfo, SnapRef, Source
from zflock.replication.retention import (
    KeepRules,
    PeerHistory,
    plan_retention,
    protect_unasked,
)

log = logging.getLogger("zflock.replication")

# Asks one other target of the policy for its replica's state (an RPC in the agent).
StateOf = Callable[[], Awaitable[ReplicaInfo]]


@dataclass(frozen=True)
class PruneRules:
    """What each side keeps, and every replica the primary must protect.

    `targets` is the policy's target list; None when the volume has no policy
    (its replicas are unknown, so its primary is not pruned).
    """

    keep: KeepRules
    keep_replica: KeepRules
    targets: tuple[str, ...] | None


@dataclass(frozen=True)
class SidePruned:
    """One side's pruning: what went, what stays protected and why, or why it did not run."""

    node: str
    destroyed: tuple[str, ...] = ()  # snapshot names, oldest first
    remaining: int = 0
    protected: dict[str, str] = field(default_factory=dict)  # name -> reason
    skipped: str | None = None  # why this side was not pruned (None: it was)
    error: str | None = None


@dataclass(frozen=True)
class PruneReport:
    replica: SidePruned
    primary: SidePruned
    cursor: str | None = None  # the snapshot the peer's cursor bookmark now marks
    held: str | None = None  # the replica's snapshot under the base hold
    # The replica's snapshots afterwards, as its answer listed them (None: unknown):
    # what the next run may start from (agent/link_memory.py).
    replica_snapshots: tuple[SnapRef, ...] | None = None

    @property
    def errors(self) -> list[str]:
        return [s.error for s in (self.replica, self.primary) if s.error]


async def prune_after_sync(
    primary: PrunablePrimary,
    replica: PrunableReplica,
    identity: SourceIdentity,
    rules: PruneRules,
    *,
    peer: str,
    others: Mapping[str, StateOf],
    now: datetime,
    source: Source | None = None,
    replica_state: ReplicaInfo | None = None,
    source_remembered: bool = False,
) -> PruneReport:
    """Prune `peer`'s replica and then the primary (see the module docstring).

    `others` maps each other target of the policy to a way to ask its state;
    a target missing from it, or whose answer fails, counts as not asked.
    `source`: the primary as the caller read it after its last change (a cycle's
    read after its snapshot: a send changes no snapshot); read here when None.
    `replica_state`: `peer`'s replica as the sync left it (driver.Outcome.replica),
    to plan its request from; asked here when None. Only the request is planned
    from it: the replica decides again from its own listing and refuses a request
    for anything it keeps (so a wrong state keeps more, never less), and the
    primary then prunes itself from the replica's answer, never from this.
    `source_remembered`: `source` was not read in this run (agent/link_memory.py); the
    primary then reads itself again before it destroys anything.
    """
    if source is None:
        source = await primary.source()
    names = {s.guid: s.name for s in source.snapshots}
    pruned = await _prune_replica(
        replica, identity, rules, source.snapshots, peer, now, replica_state
    )
    replica_side, shared, held = pruned.side, pruned.shared, pruned.held
    listed = None if shared is None else tuple(shared)
    cursor: str | None = None
    base = diff(source.snapshots, shared).source_base if shared is not None else None
    if base is not None:
        try:
            if await primary.move_cursor(peer, base):
                cursor = base.name
        except ZflockError as exc:
            log.warning("%s: cursor for %s not moved: %s", identity.volume, peer, exc)

    if rules.targets is None:
        skipped = "no replication policy lists this volume's replicas"
        return PruneReport(
            replica_side, SidePruned(identity.node, skipped=skipped), cursor, held, listed
        )
    peers: list[PeerHistory] = []
    protect: dict[int, str] = {}
    if shared is not None:
        peers.append(PeerHistory(peer, shared))
    else:  # the replica's state is unknown now: keep what could be its base
        protect.update(await _unasked(primary, source.snapshots, peer))
    if pruned.resume_to is not None:
        protect[pruned.resume_to] = f"the snapshot {peer}'s resumable stream completes"
    for target in rules.targets:
        if target in (peer, identity.node):
            continue
        ask = others.get(target)
        try:
            if ask is None:
                raise ZflockError("no way to ask it")
            state = await ask()
        except (ZflockError, OSError, TimeoutError) as exc:
            log.warning("%s: could not ask %s before pruning: %s", identity.volume, target, exc)
            protect.update(await _unasked(primary, source.snapshots, target))
            continue
        peers.append(PeerHistory(target, state.snapshots))
        if state.resume_to_guid is not None:
            protect[state.resume_to_guid] = f"the snapshot {target}'s resumable stream completes"
    decision = plan_retention(source.snapshots, rules.keep, now, peers, protect.keys())
    if decision.destroy and source_remembered:
        # Planned from a listing remembered from the run before: an operator's own `zfs
        # destroy` since could make a bucket keep a snapshot that is gone and destroy
        # the one left. So before anything goes, plan again from this copy as it is.
        source = await primary.source()
        names = {s.guid: s.name for s in source.snapshots}
        decision = plan_retention(source.snapshots, rules.keep, now, peers, protect.keys())
    reasons = {**decision.protected, **protect}
    protected = {names[g]: why for g, why in reasons.items() if g in names}
    try:
        gone = await primary.destroy_snapshots(list(decision.destroy))
    except ZflockError as exc:
        log.warning("%s: pruning the primary failed: %s", identity.volume, exc)
        side = SidePruned(identity.node, protected=protected, error=str(exc))
        return PruneReport(replica_side, side, cursor, held, listed)
    primary_side = SidePruned(
        identity.node,
        destroyed=tuple(s.name for s in gone),
        remaining=len(source.snapshots) - len(gone),
        protected=protected,
    )
    return PruneReport(replica_side, primary_side, cursor, held, listed)


@dataclass(frozen=True)
class _ReplicaPruned:
    side: SidePruned
    shared: list[SnapRef] | None  # its snapshots afterwards; None: unknown
    resume_to: int | None = None  # the GUID its resumable stream completes
    held: str | None = None  # the snapshot under its base hold


async def _prune_replica(
    replica: PrunableReplica,
    identity: SourceIdentity,
    rules: PruneRules,
    source: Sequence[SnapRef],
    peer: str,
    now: datetime,
    known: ReplicaInfo | None,
) -> _ReplicaPruned:
    """Step 1 of the module docstring (`known`: the replica's state, else asked)."""
    try:
        state = known if known is not None else await replica.state()
        if not state.exists:
            return _ReplicaPruned(SidePruned(peer, skipped="it has no copy"), [])
        decision = plan_retention(
            state.snapshots, rules.keep_replica, now, [PeerHistory(identity.node, source)]
        )
        request = PruneRequest(
            keep=rules.keep_replica.text(),
            now=now.timestamp(),
            source_snapshots=list(source),
            destroy=list(decision.destroy),
        )
        answer = await replica.prune(identity, request)
    except (ZflockError, OSError, TimeoutError) as exc:
        log.warning("%s: pruning the replica on %s failed: %s", identity.volume, peer, exc)
        return _ReplicaPruned(SidePruned(peer, error=str(exc)), None)
    names = {s.guid: s.name for s in state.snapshots}
    protected = {names[g]: why for g, why in decision.protected.items() if g in names}
    side = SidePruned(
        peer,
        destroyed=tuple(s.name for s in answer.destroyed),
        remaining=len(answer.snapshots),
        protected=protected,
    )
    held = answer.held.name if answer.held is not None else None
    return _ReplicaPruned(side, list(answer.snapshots), state.resume_to_guid, held)


async def _unasked(
    primary: PrunablePrimary, snapshots: Sequence[SnapRef], target: str
) -> dict[int, str]:
    try:
        cursor = (await primary.cursors()).get(target)
    except ZflockError:
        cursor = None
    return protect_unasked(snapshots, target, cursor)
