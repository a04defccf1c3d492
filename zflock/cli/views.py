"""Pure aggregation of per-node answers into what the CLI shows.

A volume's copies are grouped by their zflock:id, not by name: two volumes
that happen to share a name on different nodes are different volumes, and
`ls` must show that rather than merge them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from zflock.cluster.ownership import ROLE_PRIMARY, parse_stale
from zflock.rpc.messages import VolumeInfo


@dataclass(frozen=True)
class VolumeView:
    name: str
    id: str
    primary: str | None  # node holding the writable copy, None if no reachable primary
    epoch: int  # the highest epoch of any copy
    copies: list[VolumeInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def primary_copy(self) -> VolumeInfo | None:
        return next((c for c in self.copies if c.node == self.primary), None)

    @property
    def replicas(self) -> list[VolumeInfo]:
        return [c for c in self.copies if c.node != self.primary]


def group_volumes(copies: list[VolumeInfo]) -> list[VolumeView]:
    by_id: dict[str, list[VolumeInfo]] = defaultdict(list)
    for copy in copies:
        by_id[copy.id].append(copy)
    names: dict[str, set[str]] = defaultdict(set)
    for vid, group in by_id.items():
        names[group[0].name].add(vid)
    views = []
    for vid, group in by_id.items():
        group.sort(key=lambda c: (c.role != ROLE_PRIMARY, -c.epoch, c.node))
        epoch = max(c.epoch for c in group)
        primaries = [c for c in group if c.role == ROLE_PRIMARY]
        problems = []
        # The primary is the primary copy of the highest epoch; an older
        # "primary" is a fenced leftover and must not be shown as the owner.
        current = [c for c in primaries if c.epoch == epoch]
        primary = current[0].node if len(current) == 1 else None
        if len(current) > 1:
            nodes = ", ".join(c.node for c in current)
            problems.append(f"more than one primary at epoch {epoch}: {nodes}")
        stale = [c.node for c in primaries if c.epoch < epoch]
        if stale:
            problems.append(f"stale primary at a lower epoch on {', '.join(stale)}")
        if not primaries:
            problems.append("no reachable primary")
        for c in group:
            # A former source that lost to a higher epoch: safe (read-only), but an
            # operator should know why it is there (docs/move.md, "Stale copies").
            if (label := parse_stale(c.stale)) is not None:
                problems.append(f"{c.node} holds a {label.describe()}")
        if len(names[group[0].name]) > 1:
            problems.append(f"another volume named {group[0].name} exists (id differs)")
        views.append(
            VolumeView(
                name=group[0].name, id=vid, primary=primary, epoch=epoch,
                copies=group, problems=problems,
            )
        )  # fmt: skip
    views.sort(key=lambda v: (v.name, v.id))
    return views
