"""The `prune_replica` operation: a primary asks its replica to prune itself after a sync.

Kept apart from messages.py (near its size limit); OPERATIONS there lists the
operation. The receiver decides from its own state (replication/zfs_prune.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zflock.replication.endpoint import SourceIdentity
from zflock.replication.model import SnapRef


@dataclass(frozen=True)
class PruneReplica:
    """endpoint.PruneRequest on the wire, with who asks."""

    source: SourceIdentity
    keep: str  # keep rules (retention.py grammar)
    now: float  # unix seconds
    source_snapshots: list[SnapRef] = field(default_factory=list)
    destroy: list[SnapRef] = field(default_factory=list)


@dataclass(frozen=True)
class ReplicaPruned:
    """endpoint.PruneAnswer on the wire."""

    destroyed: list[SnapRef]
    snapshots: list[SnapRef]
    held: SnapRef | None = None
