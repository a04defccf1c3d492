"""Pruning on a node's own ZFS: destroy what a retention decision says, move the base's
protection (OpenZFS holds and bookmarks). Decisions are retention.py's; this only executes.

Two protections exist on OpenZFS besides the pure rule (zfs-fuse has neither: the
capability probe says so, and there the rule alone protects the base):

- on a replica, a user hold `zflock-base` on its newest common snapshot with the
  primary: nothing, not even an operator's `zfs destroy`, removes the base of the
  next incremental by accident;
- on the primary, a bookmark `#zflock-cursor-<peer>` on the newest snapshot that
  replica confirmed it has: when the primary cannot ask that replica, the cursor
  bounds what may still be its base (retention.protect_unasked).

Both move only forward from what the receiver reported after a step (a new hold
is placed before the old one is released: there is always one), never from a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from zflock.replication.endpoint import PruneAnswer, PruneRequest
from zflock.replication.history import diff
from zflock.replication.model import ReplicaInfo, SnapRef
from zflock.replication.naming import is_own
from zflock.replication.retention import (
    PeerHistory,
    PruneRefused,
    admit_prune,
    parse_keep,
    plan_retention,
)
from zflock.zfs import DatasetBusy, Snapshot, Zfs

log = logging.getLogger("zflock.replication")

BASE_HOLD = "zflock-base"
CURSOR_PREFIX = "zflock-cursor-"


def snapref(snap: Snapshot) -> SnapRef:
    """A listed snapshot as the planner sees it (both endpoints and pruning use this)."""
    # createtxg where the ZFS has it; otherwise the listing position, which is
    # creation order within one dataset (LAB.md).
    order = snap.createtxg if snap.createtxg is not None else snap.index
    return SnapRef(name=snap.name, guid=snap.guid, order=order, size=snap.referenced)


def cursor_name(peer: str) -> str:
    return f"{CURSOR_PREFIX}{peer}"


async def cursors(zfs: Zfs, dataset: str) -> dict[str, int]:
    """Peer -> the createtxg of its replication cursor ({} where there are no bookmarks)."""
    if not (await zfs.capabilities()).bookmarks:
        return {}
    return {
        mark.name[len(CURSOR_PREFIX) :]: mark.createtxg
        for mark in await zfs.list_bookmarks(dataset)
        if mark.name.startswith(CURSOR_PREFIX)
    }


async def move_cursor(zfs: Zfs, dataset: str, peer: str, to: SnapRef) -> bool:
    """Point `#zflock-cursor-<peer>` at `to` (by GUID); False where ZFS has no bookmarks.

    A bookmark can be neither renamed nor re-pointed, so the old one is destroyed
    first: a crash in between leaves no cursor, which only makes the primary keep
    more (protect_unasked keeps everything for a replica without one).
    """
    if not (await zfs.capabilities()).bookmarks:
        return False
    name = cursor_name(peer)
    snap = next((s for s in await zfs.list_snapshots(dataset) if s.guid == to.guid), None)
    if snap is None:
        return False  # gone meanwhile: the next confirmed step moves it
    current = [m for m in await zfs.list_bookmarks(dataset) if m.name == name]
    if current and current[0].guid == to.guid:
        return True
    if current:
        await zfs.destroy_bookmark(dataset, name)
    await zfs.bookmark(snap.full_name, name)
    return True


async def move_base_hold(zfs: Zfs, dataset: str, base: SnapRef | None) -> SnapRef | None:
    """Hold `zflock-base` on `base` (by GUID) and on no other snapshot; None where ZFS
    has no holds. The new hold comes first, so the base is never unprotected."""
    if not (await zfs.capabilities()).holds:
        return None
    snaps = await zfs.list_snapshots(dataset)
    held = await zfs.held(dataset, BASE_HOLD)
    target = next((s for s in snaps if base is not None and s.guid == base.guid), None)
    if target is not None and target.name not in held:
        await zfs.hold(target.full_name, BASE_HOLD)
    for name in held:
        if target is None or name != target.name:
            await zfs.release(f"{dataset}@{name}", BASE_HOLD)
    return None if target is None else snapref(target)


async def destroy_snapshots(
    zfs: Zfs, dataset: str, refs: Sequence[SnapRef], *, release_base_hold: bool
) -> list[SnapRef]:
    """Destroy each snapshot (by GUID, as listed now); return those destroyed.

    Skipped, with a warning: a snapshot gone meanwhile, one zflock did not take
    (a second check after the planner's), one with a hold that is not ours (an
    operator's), and one ZFS calls busy (zfs-fuse keeps a hold on a snapshot
    whose send was interrupted). `release_base_hold` releases our own
    `zflock-base` first: on a primary such a hold is left from when the copy was
    a replica, and the primary's base is protected by the rule and the cursor.
    """
    if not refs:
        return []  # most runs: no command at all
    listed = {s.guid: s for s in await zfs.list_snapshots(dataset)}
    targets = [listed[r.guid] for r in refs if r.guid in listed and is_own(listed[r.guid].name)]
    holds = (
        await zfs.holds_of([t.full_name for t in targets])
        if targets and (await zfs.capabilities()).holds
        else {}
    )
    destroyed: list[SnapRef] = []
    for snap in targets:
        tags = holds.get(snap.full_name, [])
        if any(tag != BASE_HOLD for tag in tags) or (tags and not release_base_hold):
            log.warning("%s: not pruning @%s: held (%s)", dataset, snap.name, ", ".join(tags))
            continue
        if tags:
            await zfs.release(snap.full_name, BASE_HOLD)
        try:
            await zfs.destroy_snapshot(dataset, snap.name)
        except DatasetBusy as exc:
            log.warning("%s: not pruning @%s now: %s", dataset, snap.name, exc)
            continue
        destroyed.append(snapref(snap))
    if destroyed:
        log.info("%s: pruned %s", dataset, ", ".join(f"@{s.name}" for s in destroyed))
    return destroyed


async def prune_replica(
    zfs: Zfs, dataset: str, info: ReplicaInfo, primary: str, request: PruneRequest
) -> PruneAnswer:
    """A replica prunes itself as its primary asks, if its own decision agrees.

    `info` is the replica's own state, listed now (the caller checked it is a
    replica of the sender's volume and holds its volume lock). The decision is
    made again here from it, with the sender's snapshots as its one peer (the
    source is the authority on what it has); a request for anything that
    decision keeps is refused whole before anything changes (admit_prune).
    Then the base hold moves to the newest common snapshot, and what was asked
    is destroyed.
    """
    try:
        now = datetime.fromtimestamp(request.now, UTC)
    except (OverflowError, ValueError, OSError):
        raise PruneRefused(f"refusing to prune {info.label}: bad clock {request.now!r}") from None
    peer = PeerHistory(primary, request.source_snapshots)
    decision = plan_retention(info.snapshots, parse_keep(request.keep), now, [peer])
    admit_prune(decision, request.destroy, info.snapshots, info.label)
    base = diff(request.source_snapshots, info.snapshots).destination_base
    held = await move_base_hold(zfs, dataset, base)
    destroyed = await destroy_snapshots(zfs, dataset, request.destroy, release_base_hold=False)
    # Listed again only when something went (a hold changes no listing).
    after = [snapref(s) for s in await zfs.list_snapshots(dataset)] if destroyed else info.snapshots
    return PruneAnswer(destroyed=destroyed, snapshots=list(after), held=held)


async def release_base_holds(zfs: Zfs, dataset: str) -> None:
    """Release our `zflock-base` holds on the dataset's snapshots (before destroying the
    whole copy: `zfs destroy -r` refuses held snapshots). Others' holds stay."""
    if not (await zfs.capabilities()).holds:
        return
    for name in await zfs.held(dataset, BASE_HOLD):
        await zfs.release(f"{dataset}@{name}", BASE_HOLD)
