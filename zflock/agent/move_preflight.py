"""Before a move changes anything: everything that can refuse it, and the plan it prints.

Checked on the move's own connection (the replication link) before the job starts,
so that a refused move, or a `--dry-run`, leaves both nodes as they were. The
decisions (space, the plan's wording) are pure functions below.
"""

from __future__ import annotations

from dataclasses import dataclass

from zflock.agent.link import ReplicationLink
from zflock.agent.move_site import MoveSite
from zflock.errors import UsageError, ZflockError
from zflock.replication.model import ReplicaInfo
from zflock.rpc import messages as m
from zflock.units import format_bytes

# Keep this share of the destination pool free after the move's data landed.
SPACE_MARGIN = 0.05


def space_needed(referenced: int, destination: ReplicaInfo) -> int:
    """About how much the destination's pool must take: all of it, or what the replica lacks."""
    if not destination.exists or not destination.snapshots:
        return referenced
    have = destination.snapshots[-1].size or 0
    return max(referenced - have, 0)


def enough_space(needed: int, pool_free: int) -> bool:
    """Whether `needed` bytes fit in a pool with `pool_free`, keeping SPACE_MARGIN free."""
    return needed <= pool_free * (1 - SPACE_MARGIN)


@dataclass(frozen=True)
class MovePlan:
    """What a move will do, as known before it starts (for `--dry-run`)."""

    volume: str
    source: str
    destination: str
    epoch: int  # the source's now; the destination gets epoch + 1
    mountpoint: str
    referenced: int  # the source copy's size
    replica_snapshots: int | None  # on the destination; None: it has no replica
    pool_free: int  # the destination's
    needed: int
    max_downtime: float
    max_rounds: int
    pre_hooks: int  # command line's plus the configured one
    post_hooks: int  # command line's (the destination adds its own)
    destroy_source: bool

    def lines(self) -> list[str]:
        peer = self.destination
        first = (
            f"incremental from the replica on {peer} ({self.replica_snapshots} snapshot(s) there)"
            if self.replica_snapshots is not None
            else f"full send of about {format_bytes(self.referenced)} (no replica on {peer})"
        )
        end = "destroy" if self.destroy_source else "keep as a read-only replica"
        return [
            f"pre-copy round 1: {first}",
            f"more rounds until the final delta fits half of {self.max_downtime:g} s "
            f"(at most {self.max_rounds} rounds)",
            f"cutover: pre-cutover hooks ({self.pre_hooks}), "
            f"fence {self.source} (readonly=on, unmount), final snapshot and delta, "
            f"verify its GUID on {peer}",
            f"promote {peer} to epoch {self.epoch + 1}, mount at "
            f"{self.mountpoint}, post-cutover hooks ({self.post_hooks} + {peer}'s own)",
            f"then {end} the copy on {self.source}",
            f"space: {peer} has {format_bytes(self.pool_free)} free, needs about "
            f"{format_bytes(self.needed)}",
        ]


async def preflight(
    site: MoveSite, link: ReplicationLink, post_hooks: list[list[str]], args: m.Move
) -> MovePlan:
    """Refuse the move now if it cannot succeed; else what it will do. `link` is connected."""
    name, peer = link.volume, link.peer.name
    info: m.NodeInfo = await link.client.call("node_info", m.Empty())
    if post_hooks and not info.client_hooks:
        raise UsageError(
            f"node {peer} does not run hooks given on the command line (--post-hook); "
            "set allow_client_hooks = true in its agent.toml, or configure the hooks there"
        )
    await link.check()  # a conflict with the replica refuses here
    copy = await site.volumes.get(name)
    replica = link.replica
    needed = space_needed(copy.referenced, replica)
    if not enough_space(needed, info.pool_free):
        raise ZflockError(
            f"not enough space on {peer}: moving {name} needs about "
            f"{format_bytes(needed)}, its pool has {format_bytes(info.pool_free)} free"
        )
    configured = site.config.hooks_for(name)
    return MovePlan(
        volume=name, source=site.config.node, destination=peer, epoch=copy.epoch,
        mountpoint=site.config.mountpoint(name), referenced=copy.referenced,
        replica_snapshots=len(replica.snapshots) if replica.exists else None,
        pool_free=info.pool_free, needed=needed, max_downtime=args.max_downtime,
        max_rounds=args.max_rounds, pre_hooks=len(args.pre_hooks) + bool(configured.pre_cutover),
        post_hooks=len(post_hooks), destroy_source=args.destroy_source,
    )  # fmt: skip
