"""Whether and where to fail a volume over, decided from what the nodes answered (pure).

`zflock failover VOLUME [--to NODE] [--force]` runs this twice: in the CLI,
to choose the target and refuse early, and in the target's agent, under the
volume's lock, over answers it gathered itself -- the agent never trusts the
CLI's view. Each refusal is one line saying why and what to do instead.

The checks, in order (docs/failover.md):

1. the volume is found on an answering node, under one id;
2. **no primary answers** (the cluster view, zflock.cluster.view): a live
   primary is moved (`zflock move`), never failed over;
3. the target (`--to`, else the freshest) is a reachable *replica* with a
   snapshot: not a stale copy, not a node that did not answer;
4. **freshness**, by GUID and each dataset's own createtxg order, never by
   name: replica B is newer than A when B holds A's newest snapshot (same
   GUID) and more after it. Two replicas that do not hold each other's newest
   snapshot (pruned differently) are compared by the creation time of their
   newest snapshot, which a received snapshot keeps. `--to` a replica with a
   newer one reachable is refused unless `--force` (it would lose more);
5. **the old primary has stopped writing** (skipped by `--force`): the
   answering nodes are a majority of the inventory, and every one of them has
   had no answer from every node that did not answer for longer than its
   `self_fence_after` plus margin (the lease: zflock.cluster.lease). An
   isolated primary fences itself within `self_fence_after`, and a primary
   still in contact with a majority is in contact with one of these nodes
   (two majorities share a node), which then reports it reachable;
6. the new epoch is one above every epoch seen for the volume id: copies'
   epochs, what stale copies lost to, and epochs of moves in progress.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal

from zflock.cluster.view import C, VolumeView
from zflock.move.marker import BadMarker, parse_marker
from zflock.replication.model import SnapRef

RefusalKind = Literal[
    "not-found",  # no answering node holds the volume
    "ambiguous",  # two volume ids under the name, or two primaries
    "primary-alive",  # the primary answers: use zflock move
    "bad-target",  # --to names a node that cannot be promoted
    "no-replica",  # nothing reachable can be promoted
    "staler",  # --to a replica while a newer one is reachable
    "no-majority",  # the answering nodes are not a majority (or there is no lease)
    "too-soon",  # the old primary may not have fenced itself yet
]


@dataclass(frozen=True)
class Candidate:
    """A reachable copy's snapshots: oldest first (its own createtxg order)."""

    node: str
    snapshots: tuple[SnapRef, ...]
    newest_time: int | None = None  # creation of the newest snapshot, unix seconds

    @property
    def newest(self) -> SnapRef | None:
        return self.snapshots[-1] if self.snapshots else None


@dataclass(frozen=True)
class Reading:
    """What an answering node (`reporter`) says of a node that did not answer us."""

    reporter: str
    node: str
    seconds: float | None  # since its last answer to the reporter; None: it answers now
    wait: float  # the reporter's self_fence_after + margin


@dataclass(frozen=True)
class Situation(Generic[C]):
    """Everything the decision reads: the answers of one round of asking."""

    volume: str
    inventory: tuple[str, ...]
    views: Sequence[VolumeView[C]]  # the cluster view over the answering nodes
    answered: tuple[str, ...]  # nodes that answered list_volumes
    candidates: Mapping[str, Candidate]  # snapshots of each answering node's copy
    readings: tuple[Reading, ...] = ()
    lease_active: bool = True  # False: the inventory is too small for a majority lease
    unreadable: Mapping[str, str] = field(default_factory=dict)  # reporter -> why no readings

    @property
    def unreachable(self) -> tuple[str, ...]:
        return tuple(n for n in self.inventory if n not in self.answered)


@dataclass(frozen=True)
class Plan:
    target: str
    volume_id: str
    epoch: int
    snapshot: SnapRef
    snapshot_time: int | None
    unreachable: tuple[str, ...]
    forced: tuple[str, ...] = ()  # the checks --force skipped, said in words
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    kind: RefusalKind
    reason: str  # one line


def newer(a: Candidate, b: Candidate) -> bool:
    """Does `a` hold writes that `b` lacks (module docstring, check 4)?"""
    na, nb = a.newest, b.newest
    if na is None:
        return False
    if nb is None:
        return True
    if na.guid == nb.guid:
        return False
    if any(s.guid == nb.guid for s in a.snapshots):
        return True  # a holds b's newest, and its own newest is another, later one
    if any(s.guid == na.guid for s in b.snapshots):
        return False
    return (a.newest_time or 0) > (b.newest_time or 0)


def _compare(a: Candidate, b: Candidate) -> int:
    return 1 if newer(a, b) else -1 if newer(b, a) else 0


def freshest(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate no other is newer than (ties: by node name, for a stable choice)."""
    ordered = sorted(candidates, key=lambda c: c.node)
    return max(ordered, key=functools.cmp_to_key(_compare))


def seen_epoch(view: VolumeView[C]) -> int:
    """The highest epoch seen for the volume: the view's, and moves in progress."""
    highest = view.seen_epoch
    for c in view.copies:
        value = getattr(c, "move", None)
        try:
            marker = parse_marker(value) if isinstance(value, str) else None
        except BadMarker:
            marker = None
        if marker is not None:
            highest = max(highest, marker.new_epoch)
    return highest


def _one_view(s: Situation[C]) -> VolumeView[C] | Refusal:
    views = [v for v in s.views if v.name == s.volume]
    down = s.unreachable
    if not views:
        where = f"; unreachable: {', '.join(down)}" if down else ""
        return Refusal("not-found", f"volume {s.volume} not found on any answering node{where}")
    if len(views) > 1:
        ids = ", ".join(v.id for v in views)
        return Refusal("ambiguous", f"two different volumes are named {s.volume} (ids {ids})")
    return views[0]


def _target(s: Situation[C], view: VolumeView[C], to: str | None) -> Candidate | Refusal:
    usable = [
        c for n, c in s.candidates.items() if view.status(n) == "replica" and c.newest is not None
    ]
    if to is not None:
        if to not in s.inventory:
            return Refusal("bad-target", f"node {to} is not in the inventory")
        if to not in s.answered:
            return Refusal("bad-target", f"node {to} did not answer: only a reachable replica "
                           "can be promoted")  # fmt: skip
        status = view.status(to)
        if status is None:
            return Refusal("bad-target", f"node {to} holds no copy of {s.volume}")
        if status != "replica":
            return Refusal("bad-target", f"the copy of {s.volume} on {to} is {status}, not a "
                           "replica: it cannot be promoted")  # fmt: skip
        chosen = next((c for c in usable if c.node == to), None)
        if chosen is None:
            return Refusal("bad-target", f"the copy of {s.volume} on {to} has no snapshot")
        return chosen
    if not usable:
        parts = [f"unreachable: {', '.join(s.unreachable)}"] if s.unreachable else []
        if view.stale_nodes:
            parts.append(f"stale: {', '.join(view.stale_nodes)}")
        why = f" ({'; '.join(parts)})" if parts else ""
        return Refusal("no-replica", f"no reachable replica of {s.volume} can be promoted{why}")
    return freshest(usable)


def _fenced_by_now(s: Situation[C]) -> Refusal | None:
    """Check 5: None when the old primary must have stopped writing."""
    total = len(s.inventory)
    if not s.lease_active:
        return Refusal("no-majority", f"the inventory has {total} node(s): too few for a "
                       "majority lease, so an old primary never fences itself; add a witness "
                       "node (docs/failover.md) or pass --force")  # fmt: skip
    if len(s.answered) <= total // 2:
        return Refusal("no-majority", f"only {len(s.answered)} of {total} nodes answer, not a "
                       "majority: the old primary may be writing with the others")  # fmt: skip
    if not s.unreachable:
        return None
    for reporter in s.answered:
        if reporter in s.unreadable:
            return Refusal("too-soon", f"cannot tell how long the old primary has been "
                           f"unreachable: {reporter}: {s.unreadable[reporter]}")  # fmt: skip
    left: list[tuple[float, Reading]] = []
    for node in s.unreachable:
        for reporter in s.answered:
            r = next((r for r in s.readings if r.reporter == reporter and r.node == node), None)
            if r is None:
                return Refusal("too-soon", f"{reporter} did not say how long {node} has been "
                               "unreachable")  # fmt: skip
            # None: it answered the reporter moments ago (within a ping round). It may
            # be alive and cut off from us only, or only just gone: wait as if it had
            # answered now; while it keeps answering, the wait never ends.
            left.append((r.wait - (r.seconds or 0.0), r))
    left = [x for x in left if x[0] > 0]
    if not left:
        return None
    wait, r = max(left, key=lambda x: x[0])
    if r.seconds is None:
        seen = (f"{r.node} answered {r.reporter} moments ago (it may be alive and cut off "
                "from this side only, or only just gone)")  # fmt: skip
    else:
        seen = f"{r.node} has been unreachable for {r.seconds:.0f} s (as {r.reporter} sees it)"
    return Refusal("too-soon", f"the old primary may still be writing: {seen}; failover is "
                   f"allowed after {r.wait:.0f} s without an answer (self_fence_after + "
                   f"margin): {wait:.0f} s left (--force skips this wait, at the risk of two "
                   "writers)")  # fmt: skip


def decide(s: Situation[C], *, to: str | None, force: bool) -> Plan | Refusal:
    """Fail `s.volume` over to `to` (None: the freshest replica), or why not (module doc)."""
    view = _one_view(s)
    if isinstance(view, Refusal):
        return view
    if view.primary is not None:
        fenced = (
            " (it fenced itself, and unfences once it sees a majority again)"
            if view.primary in view.fenced_nodes
            else ""
        )
        return Refusal(
            "primary-alive", f"the primary of {s.volume} on {view.primary} answers{fenced}: to "
            f"change the primary, use `zflock move {s.volume} --to NODE`",
        )  # fmt: skip
    unclear = [c.node for c in view.copies if view.status(c.node) == "unclear"]
    if unclear:
        return Refusal("ambiguous", f"{s.volume}: {'; '.join(view.problems)}")
    target = _target(s, view, to)
    if isinstance(target, Refusal):
        return target
    forced: list[str] = []
    ahead = [
        c
        for n, c in sorted(s.candidates.items())
        if n != target.node and view.status(n) == "replica" and newer(c, target)
    ]
    if ahead:
        best = freshest(ahead)
        assert best.newest is not None and target.newest is not None
        why = (f"{best.node} holds a newer snapshot (@{best.newest.name}) than {target.node} "
               f"(@{target.newest.name})")  # fmt: skip
        if not force:
            return Refusal("staler", f"{why}: fail over to {best.node}, or pass --force to lose "
                           "the difference")  # fmt: skip
        forced.append(why)
    fence = _fenced_by_now(s)
    if fence is not None:
        if not force:
            return fence
        forced.append(fence.reason)
    assert target.newest is not None
    return Plan(
        target=target.node, volume_id=view.id, epoch=seen_epoch(view) + 1,
        snapshot=target.newest, snapshot_time=target.newest_time, unreachable=s.unreachable,
        forced=tuple(forced),
    )  # fmt: skip


def old_primary(unreachable: Sequence[str], targets: Sequence[str]) -> str | None:
    """The node that was the primary, when it can be told: the one unreachable node that
    is not a target of the volume's policy (a primary never replicates to itself)."""
    left = [n for n in unreachable if n not in targets]
    return left[0] if len(left) == 1 else None
