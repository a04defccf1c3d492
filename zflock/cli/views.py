"""What `zflock ls` and the other commands show of the cluster's copies.

The rule itself (which copy is primary, which are replicas or stale) is
`zflock.cluster.view`, shared with the agents; here it is applied to the
wire's `VolumeInfo`, so the CLI can show every field of every copy.
"""

from __future__ import annotations

from collections.abc import Iterable

from zflock.cluster import view
from zflock.rpc.messages import VolumeInfo

VolumeView = view.VolumeView[VolumeInfo]


def group_volumes(copies: list[VolumeInfo], unreachable: Iterable[str] = ()) -> list[VolumeView]:
    """Copies grouped into volumes by zflock:id (cluster/view.py has the rule)."""
    return view.cluster_view(copies, unreachable)
