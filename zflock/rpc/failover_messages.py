"""The `failover` operation (docs/failover.md): promote this node's replica of a volume
whose primary is gone.

Kept apart from messages.py (near its size limit); OPERATIONS there lists it.
Times are unix seconds, durations seconds. Field names are also those of
`zflock failover --json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FailoverRequest:
    """Promote the receiving node's replica of `name`, if the rules allow it now.

    The agent asks every node again itself, under the volume's lock: what the
    CLI saw is not trusted. `force` skips the freshness check (a newer replica
    elsewhere) and the wait for the old primary to have fenced itself.
    """

    name: str
    force: bool = False
    post_hooks: list[list[str]] = field(default_factory=list)  # argv lists, as for a move


@dataclass(frozen=True)
class FailoverPolicy:
    """The replication policy the new primary keeps (targets after the failover)."""

    targets: list[str]
    every: str | None
    keep: str | None
    keep_replica: str | None


@dataclass(frozen=True)
class FailoverReport:
    volume: str
    volume_id: str
    node: str  # the new primary
    epoch: int  # its new epoch
    snapshot: str  # the newest snapshot it holds: everything after it is lost
    snapshot_guid: int
    snapshot_time: int | None  # its creation (unix s)
    promoted_at: float  # when the copy became writable (unix s)
    loss_window_s: float | None  # promoted_at - snapshot_time: the writes lost, at most
    unreachable: list[str]  # the nodes that could not be asked
    old_primary: str | None  # when it can be told (the one unreachable non-target)
    move_id: str  # written as zflock:promoted-by=<id>/<epoch>
    seconds: float  # asking, promoting, mounting and the post-cutover hooks
    forced: list[str] = field(default_factory=list)  # what --force overrode
    policy: FailoverPolicy | None = None
    policy_from: str | None = None  # the node whose copy of the policy was adopted
    policy_serial: int | None = None  # the serial the new primary stores it with
    hook_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
