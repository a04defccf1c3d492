"""The two sides of a move as the driver sees them, and what travels between them.

The driver (driver.py) runs in the source's agent. It changes the source
through `SourceSide` (this node's ZFS and hooks: zfs_source.py) and asks the
destination through `DestinationSide` (an RPC client in the agent:
zflock/rpc/move_peer.py, which reaches zfs_destination.py on the other node).
The destination re-checks every rule itself before it promotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from zflock.cluster.ownership import Stale
from zflock.move.fencing import Answer
from zflock.move.marker import Marker
from zflock.replication.model import ReplicaInfo


@dataclass(frozen=True)
class PromoteRequest:
    """Make the destination's replica the writable primary (sent by the source)."""

    name: str
    volume_id: str
    move_id: str
    epoch: int  # the new epoch: one above the source's
    guid: int  # the final snapshot's GUID: the replica's newest must be exactly it
    source: str  # the source node, for the hooks' environment and the logs
    post_hooks: list[list[str]] = field(default_factory=list)  # argv lists from the CLI
    # The source's replication policy properties (zflock:replicate-to, every, keep,
    # keep-replica; {} = none): the destination stores them with the direction
    # switched (replication.schedule.policy_after_move). None: not sent (an older
    # source), the destination's properties are left as they are.
    policy: dict[str, str] | None = None


@dataclass(frozen=True)
class Promotion:
    node: str
    epoch: int
    snapshot: str
    mountpoint: str
    seconds: float  # promote + mount + post-cutover hooks, on the destination
    hook_errors: list[str] = field(default_factory=list)  # post hooks that failed (move done)


@dataclass(frozen=True)
class Resolution:
    """The destination's answer to resolve_move (zflock.move.fencing.decide_resolve)."""

    answer: Answer
    epoch: int = 0  # the highest epoch the destination's copy has seen


@dataclass(frozen=True)
class SnapTaken:
    name: str
    guid: int


class SourceSide(Protocol):
    async def snapshot(self) -> SnapTaken: ...

    async def prepare_fence(self) -> None: ...

    async def fence(self) -> None: ...

    async def set_marker(self, marker: Marker) -> None: ...

    async def clear_marker(self, why: str) -> None: ...

    async def unfence(self) -> None: ...

    async def demote(self, *, destroy: bool) -> None: ...

    async def mark_stale(self, stale: Stale) -> None: ...

    async def run_hooks(self, kind: str) -> None: ...


class DestinationSide(Protocol):
    async def state(self) -> ReplicaInfo: ...

    async def promote(self, request: PromoteRequest) -> Promotion: ...

    async def resolve(self, move_id: str) -> Resolution: ...
