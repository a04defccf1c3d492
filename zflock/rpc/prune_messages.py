"""The `prune_replica` operation: a primary asks its replica to prune itself after a sync,
and gives it its replication policy to keep a copy of; `store_policy_copy`: the copy
alone (`zflock replicate --stop` tells the targets it drops).

Kept apart from messages.py (near its size limit); OPERATIONS there lists the
operations. The receiver decides from its own state (replication/zfs_prune.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zflock.replication.endpoint import SourceIdentity
from zflock.replication.model import SnapRef


@dataclass(frozen=True)
class PolicySent:
    """The primary's replication policy for its replica's copy (docs/failover.md)."""

    serial: int  # zflock:policy-serial on the primary
    sent_at: float  # unix seconds, the primary's clock
    policy: dict[str, str] = field(default_factory=dict)  # its properties; {}: no policy


@dataclass(frozen=True)
class PruneReplica:
    """endpoint.PruneRequest on the wire, with who asks."""

    source: SourceIdentity
    keep: str  # keep rules (retention.py grammar)
    now: float  # unix seconds
    source_snapshots: list[SnapRef] = field(default_factory=list)
    destroy: list[SnapRef] = field(default_factory=list)
    # Absent from an older primary (the copy is then left as it is).
    policy: PolicySent | None = None


@dataclass(frozen=True)
class StorePolicyCopy:
    """Keep `policy` as this replica's copy of its primary's (checked as a prune is)."""

    source: SourceIdentity
    policy: PolicySent


@dataclass(frozen=True)
class ReplicaPruned:
    """endpoint.PruneAnswer on the wire."""

    destroyed: list[SnapRef]
    snapshots: list[SnapRef]
    held: SnapRef | None = None
