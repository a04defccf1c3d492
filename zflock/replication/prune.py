"""Which snapshots zflock may prune (pure).

Pruning is where replication breaks silently: destroy the snapshot a replica
would use as its incremental base, and the next send needs a full copy (or
fails with NoCommonSnapshot). So the rule is conservative: only zflock's own
snapshots, never the newest, never the newest common base of any replica,
never anything the caller protects (e.g. the base of a stream still being
resumed), and always the newest `keep` of zflock's own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from zflock.errors import UsageError
from zflock.replication.history import diff, sort_history
from zflock.replication.model import SnapRef
from zflock.replication.naming import SNAPSHOT_PREFIX, is_own


def prunable(
    source_snaps: Sequence[SnapRef],
    replica_snaps_by_node: Mapping[str, Sequence[SnapRef]],
    keep: int,
    own_prefix: str = SNAPSHOT_PREFIX,
    protect_guids: Collection[int] = (),
) -> list[SnapRef]:
    """The snapshots of `source_snaps` that may be destroyed, oldest first.

    `replica_snaps_by_node` holds every known replica's snapshot list; each
    one's newest common snapshot with the source (by GUID) is kept. To prune
    a replica itself, call this with the replica's snapshots as `source_snaps`
    and the source's under its node name: the replica then keeps its base.
    """
    if keep < 1:
        # keep=0 could destroy the snapshot the next incremental starts from.
        raise UsageError(f"keep must be at least 1 snapshot, got {keep}")
    history = sort_history(source_snaps, "source")
    if not history:
        return []

    protected: set[int] = set(protect_guids)
    protected.add(history[-1].guid)  # the base of every next incremental
    for node, replica in replica_snaps_by_node.items():
        base = diff(history, sort_history(replica, node)).source_base
        if base is not None:
            protected.add(base.guid)

    own = [s for s in history if is_own(s.name, own_prefix)]
    protected.update(s.guid for s in own[-keep:])
    return [s for s in own if s.guid not in protected]
