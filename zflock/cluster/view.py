"""The cluster view: every node's answer in, per volume who is primary out (pure).

One rule, shared by `zflock ls`, the Docker plugin, `zflock failover` and the
agents (self-fencing, rejoin), so that they can never disagree on who owns a
volume:

* copies are grouped by `zflock:id`, never by name: two volumes that happen to
  share a name are two volumes (each view then reports the clash);
* the **primary** is the one copy with role `primary` at the highest epoch of
  any copy of that id, and without a stale label (a stale copy is never
  writable on a guess). Two such copies: no primary, and a problem. None: no
  reachable primary -- which, with nodes unreachable, may mean that the
  primary is on one of them;
* **replicas** are the copies with role `replica` and no stale label;
* **stale** copies must never become writable: a copy with a `zflock:stale`
  label, or a copy still marked primary at a lower epoch (a fenced leftover);
* `seen_epoch` is the highest epoch any reachable copy has seen: its own, or
  the one its stale label says it lost to. A new primary (failover) must be
  promoted above it;
* `fenced_nodes` are the copies their own agent fenced (`zflock:fenced`: a
  primary cut off from a majority). A fenced primary is still the primary --
  it becomes writable again once its agent sees a majority and no higher
  epoch -- so it is reported, not replaced;
* nodes that did not answer are named in every view: any of them may hold a
  copy, even the primary.

A node holds at most one copy of a volume (one dataset per name under its pool
root, one id per volume); the view is by node.

The copies are anything with the attributes of `CopyLike` (the wire's
`VolumeInfo` fits): the view keeps the caller's objects, so the CLI can show
every field without this module knowing the wire types.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

from zflock.cluster.ownership import ROLE_PRIMARY, ROLE_REPLICA, Stale, parse_stale

CopyStatus = Literal["primary", "replica", "stale", "unclear"]


class CopyLike(Protocol):
    """What the view reads of one copy (zflock.rpc.messages.VolumeInfo has it)."""

    @property
    def name(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def stale(self) -> str | None: ...  # zflock:stale, "<epoch>/<reason>/<move id>"


C = TypeVar("C", bound=CopyLike)


@dataclass(frozen=True)
class Copy:
    """A plain copy, for callers (and tests) that do not hold a VolumeInfo."""

    name: str
    node: str
    id: str
    role: str
    epoch: int
    stale: str | None = None
    fenced: str | None = None  # zflock:fenced, "<reason>/<unix time>"


@dataclass(frozen=True)
class VolumeView(Generic[C]):
    """One volume (one zflock:id) as the whole reachable cluster shows it."""

    name: str
    id: str
    primary: str | None  # the node of the writable copy; None if no reachable primary
    epoch: int  # the highest epoch of any copy
    seen_epoch: int  # the highest epoch any copy has seen (stale labels included)
    copies: list[C] = field(default_factory=list)  # the primary first, then by epoch
    stale_nodes: list[str] = field(default_factory=list)
    fenced_nodes: list[str] = field(default_factory=list)  # self-fenced (zflock:fenced)
    unreachable: list[str] = field(default_factory=list)  # nodes that did not answer
    problems: list[str] = field(default_factory=list)

    @property
    def primary_copy(self) -> C | None:
        return next((c for c in self.copies if c.node == self.primary), None)

    @property
    def replicas(self) -> list[C]:
        """Every copy but the primary (stale ones included: `status` tells them apart)."""
        return [c for c in self.copies if c.node != self.primary]

    def status(self, node: str) -> CopyStatus | None:
        """What the copy on `node` is (None: no copy there that answered)."""
        copy = next((c for c in self.copies if c.node == node), None)
        if copy is None:
            return None
        if node == self.primary:
            return "primary"
        if node in self.stale_nodes:
            return "stale"
        if copy.role == ROLE_REPLICA:
            return "replica"
        return "unclear"  # marked primary at the highest epoch, beside another such copy


def _label(copy: CopyLike) -> Stale | None:
    return parse_stale(copy.stale)


def _fenced(group: Iterable[CopyLike]) -> set[str]:
    """Copies whose agent fenced them (`zflock:fenced`, docs/failover.md): read if the
    copy carries the field (VolumeInfo does), as a label, never as a state change."""
    return {c.node for c in group if getattr(c, "fenced", None) not in (None, "", "-")}


def _seen(copy: CopyLike) -> int:
    label = _label(copy)
    return max(copy.epoch, label.epoch if label else 0)


def _view(vid: str, group: list[C], clash: bool, unreachable: list[str]) -> VolumeView[C]:
    epoch = max(c.epoch for c in group)
    current = [
        c for c in group if c.role == ROLE_PRIMARY and c.epoch == epoch and _label(c) is None
    ]
    primary = current[0].node if len(current) == 1 else None
    # The primary first, then copies marked primary, then by epoch (newest first).
    group = sorted(
        group, key=lambda c: (c.node != primary, c.role != ROLE_PRIMARY, -c.epoch, c.node)
    )
    name = group[0].name
    primaries = [c for c in group if c.role == ROLE_PRIMARY]
    problems = []
    if len(current) > 1:
        problems.append(f"more than one primary at epoch {epoch}: "
                        f"{', '.join(c.node for c in current)}")  # fmt: skip
    # An older "primary" is a fenced leftover and must not be shown as the owner.
    old = [c.node for c in primaries if c.epoch < epoch]
    if old:
        problems.append(f"stale primary at a lower epoch on {', '.join(old)}")
    if not current:
        where = f" (unreachable: {', '.join(unreachable)})" if unreachable else ""
        problems.append(f"no reachable primary{where}")
    labelled = []
    for c in group:
        # A former source that lost to a higher epoch: safe (read-only), but an
        # operator should know why it is there (docs/move.md, "Stale copies").
        if (label := _label(c)) is not None:
            labelled.append(c.node)
            problems.append(f"{c.node} holds a {label.describe()}")
    if clash:
        problems.append(f"another volume named {name} exists (id differs)")
    return VolumeView(
        name=name, id=vid, primary=primary, epoch=epoch,
        seen_epoch=max(_seen(c) for c in group), copies=group,
        stale_nodes=sorted({*old, *labelled}), fenced_nodes=sorted(_fenced(group)),
        unreachable=unreachable, problems=problems,
    )  # fmt: skip


def cluster_view(copies: Iterable[C], unreachable: Iterable[str] = ()) -> list[VolumeView[C]]:
    """Every volume the answering nodes hold, sorted by name then id (module docstring).

    `copies` are all the copies the answering nodes reported; `unreachable` the
    nodes that did not answer. The input is not changed.
    """
    down = sorted(set(unreachable))
    by_id: dict[str, list[C]] = defaultdict(list)
    for copy in copies:
        by_id[copy.id].append(copy)
    ids_by_name: dict[str, set[str]] = defaultdict(set)
    for vid, group in by_id.items():
        for c in group:
            ids_by_name[c.name].add(vid)
    views = [
        _view(vid, group, any(len(ids_by_name[c.name]) > 1 for c in group), down)
        for vid, group in by_id.items()
    ]
    views.sort(key=lambda v: (v.name, v.id))
    return views


def views_named(views: Sequence[VolumeView[C]], name: str) -> list[VolumeView[C]]:
    """The views of the volumes called `name` (more than one: a name clash)."""
    return [v for v in views if v.name == name or any(c.name == name for c in v.copies)]
