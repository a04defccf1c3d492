"""The typed operations an agent serves (protocol version 1).

Each operation has an argument dataclass and a result dataclass; `OPERATIONS`
maps the wire name to both. Field names here are also the stable names of
the CLI's --json output (docs/cli-json.md), so renaming one is a protocol
change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.replication.endpoint import Cleanup, SourceIdentity, StepHeader
from zflock.replication.model import SnapRef
from zflock.rpc.failover_messages import FailoverReport, FailoverRequest
from zflock.rpc.prune_messages import PruneReplica, ReplicaPruned, StorePolicyCopy
from zflock.rpc.schedule_messages import ScheduleList
from zflock.rpc.selffence_messages import LeaseStatus, Ping, Pong, Rejoin, RejoinReport


@dataclass(frozen=True)
class Empty:
    pass


# -- node_info --------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    node: str
    agent_version: str
    protocol: int
    zfs_implementation: str
    zfs_version: str | None
    capabilities: dict[str, bool]
    pool_root: str
    mount_root: str
    pool_size: int
    pool_free: int
    uptime_s: float
    running_jobs: int
    client_hooks: bool = False  # runs hooks given on the command line (allow_client_hooks)


# -- volumes ----------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeInfo:
    """One copy of a volume on one node, as its zflock properties describe it."""

    name: str
    node: str
    id: str
    role: str  # "primary" | "replica"
    epoch: int
    origin: str
    mountpoint: str
    mounted: bool
    readonly: bool
    used: int
    referenced: int
    quota: int | None
    snapshots: int
    latest_snapshot: str | None
    latest_snapshot_time: int | None  # unix seconds
    move: str | None = None  # zflock:move: a cutover in progress (docs/move.md)
    stale: str | None = None  # zflock:stale: a stale copy, <epoch>/<reason>/<move id>
    fenced: str | None = None  # zflock:fenced: a self-fenced primary, <reason>/<unix time>
    # The replication policy stored on this copy (docs/configuration.md), or
    # why it cannot be read (a damaged policy is shown, never taken for none).
    policy: PolicyInfo | None = None
    policy_error: str | None = None
    policy_serial: int | None = None  # zflock:policy-serial (the policy's, or none's)
    policy_copy: str | None = None  # zflock:policy-copy: a replica's copy of its primary's


@dataclass(frozen=True)
class ListVolumes:
    names: list[str] = field(default_factory=list)  # empty: all


@dataclass(frozen=True)
class VolumeList:
    volumes: list[VolumeInfo]


@dataclass(frozen=True)
class CreateVolume:
    name: str
    quota: int | None = None
    wait: bool = True  # wait for another operation on the volume instead of failing


@dataclass(frozen=True)
class DestroyVolume:
    name: str
    force: bool = False  # allow destroying a copy that is not the primary
    wait: bool = True


@dataclass(frozen=True)
class Destroyed:
    name: str
    node: str
    role: str
    snapshots: int


@dataclass(frozen=True)
class SnapshotVolume:
    name: str
    wait: bool = True


@dataclass(frozen=True)
class SnapshotInfo:
    volume: str
    node: str
    snapshot: str
    guid: int
    creation: int


# -- replication ------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaStateRequest:
    name: str


@dataclass(frozen=True)
class ReplicaState:
    """What a destination has of a volume (the planner's `ReplicaInfo`, on the wire)."""

    exists: bool
    volume: str | None = None  # zflock:volume
    volume_id: str | None = None
    role: str | None = None
    epoch: int | None = None
    modified: bool = False
    resume_token: str | None = None
    snapshots: list[SnapRef] = field(default_factory=list)
    resume_supported: bool = False
    resume_to_guid: int | None = None  # the snapshot the token completes, when decoded


@dataclass(frozen=True)
class PrepareReplica:
    """The cleanup a plan calls for before its steps (see replication/model.py Plan)."""

    source: SourceIdentity
    cleanup: Cleanup


@dataclass(frozen=True)
class ReceiveSnapshot:
    """Header of a data channel: the raw `zfs send` stream follows until EOF."""

    source: SourceIdentity
    header: StepHeader


@dataclass(frozen=True)
class Received:
    snapshot: str | None  # the replica's newest snapshot after the receive
    guid: int | None
    bytes: int


@dataclass(frozen=True)
class Replicate:
    name: str
    to: str
    force_rollback: bool = False
    wait: bool = True


@dataclass(frozen=True)
class StepReport:
    kind: str
    snapshot: str | None
    base: str | None
    bytes: int
    seconds: float


@dataclass(frozen=True)
class ReplicationReport:
    volume: str
    source: str
    destination: str
    snapshot: str
    guid: int
    up_to_date: bool
    steps: list[StepReport]
    bytes: int
    seconds: float
    warnings: list[str]


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    volume: str
    node: str
    target: str
    state: str  # "running" | "done" | "failed"
    started: float  # unix seconds
    bytes: int
    total: int | None
    rate: float  # bytes/s over the current step
    step: str
    error: str | None


@dataclass(frozen=True)
class JobList:
    jobs: list[JobInfo]


# -- move -------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """Move a volume from this node (its primary) to `to` (run as a job)."""

    name: str
    to: str
    max_downtime: float = 1.0  # seconds: the pre-copy converges to fit this
    max_rounds: int = 8
    strict: bool = False  # abort instead of cutting over when the budget cannot be met
    destroy_source: bool = False
    dry_run: bool = False
    pre_hooks: list[list[str]] = field(default_factory=list)  # argv lists, run on the source
    post_hooks: list[list[str]] = field(default_factory=list)  # on the destination
    rollback_hooks: list[list[str]] = field(default_factory=list)  # on the source
    wait: bool = False  # a move never queues behind another operation by default


@dataclass(frozen=True)
class RoundReport:
    round: int
    kind: str  # "full" | "incremental" | "none"
    bytes: int
    seconds: float


@dataclass(frozen=True)
class MoveReport:
    volume: str
    source: str
    destination: str
    epoch: int  # the volume's epoch after the move (unchanged if planned / rolled back)
    result: str  # "moved" | "planned" | "completed" (an interrupted move finished)
    reason: str  # why pre-copy stopped, or what recovery did
    move_id: str
    rounds: list[RoundReport] = field(default_factory=list)
    final: RoundReport | None = None
    downtime_s: float = 0.0
    total_s: float = 0.0
    bytes: int = 0
    cutover: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # --dry-run: what would happen


@dataclass(frozen=True)
class ResolveMove:
    name: str
    volume_id: str
    move_id: str
    epoch: int


@dataclass(frozen=True)
class MoveResolution:
    # zflock.move.fencing.Answer: "promoted" | "aborted" | "superseded" | "unknown"
    # (a value it does not know is read as "unknown": the source stays fenced)
    status: str
    epoch: int = 0  # the highest epoch the destination's copy has seen


# -- docker plugin ------------------------------------------------------------------


@dataclass(frozen=True)
class DockerMountsRequest:
    name: str


@dataclass(frozen=True)
class DockerMounts:
    """Who holds a volume mounted through this node's Docker plugin (docs/docker.md)."""

    node: str
    holders: list[str]  # Docker's mount IDs, also those of a Mount still moving the volume here


# -- unique names (zflock/agent/names.py, docs/design.md "Unique names") -----------


@dataclass(frozen=True)
class ReserveName:
    """Hold `name` for a create on `creator` for `ttl` seconds, unless released first."""

    name: str
    token: str  # the creator's random id for this one attempt
    creator: str  # the node that will create the volume
    ttl: float


@dataclass(frozen=True)
class NameReserved:
    node: str
    ttl: float  # seconds the reservation lives unless released


@dataclass(frozen=True)
class ReleaseName:
    name: str
    token: str


# -- replication policy (docs/configuration.md, "Replication policies") ---------------


@dataclass(frozen=True)
class SetPolicy:
    """Store a policy on the primary (targets are added), or with `stop` remove it.

    `every`: an interval such as "30s", or "" for the node's default. With
    `stop`, `to` names the targets to drop; empty drops the whole policy.
    """

    name: str
    to: list[str]
    every: str | None = None
    keep: str | None = None
    keep_replica: str | None = None
    stop: bool = False


@dataclass(frozen=True)
class PolicyInfo:
    """A volume's policy as stored on its primary `node` (no targets: none)."""

    volume: str
    node: str
    targets: list[str]
    every: str | None  # None: no schedule
    keep: str | None
    keep_replica: str | None = None
    serial: int | None = None  # zflock:policy-serial after the change
    # --stop: the dropped targets that could not be told (node: why); their copy of
    # the policy stays the old one (docs/failover.md)
    not_told: dict[str, str] = field(default_factory=dict)


OPERATIONS: dict[str, tuple[type, type]] = {
    "node_info": (Empty, NodeInfo),
    "list_volumes": (ListVolumes, VolumeList),
    "create_volume": (CreateVolume, VolumeInfo),
    "destroy_volume": (DestroyVolume, Destroyed),
    "snapshot_volume": (SnapshotVolume, SnapshotInfo),
    "replica_state": (ReplicaStateRequest, ReplicaState),
    "prepare_replica": (PrepareReplica, Empty),
    "receive_snapshot": (ReceiveSnapshot, Received),
    "replicate": (Replicate, ReplicationReport),
    "jobs": (Empty, JobList),
    "move": (Move, MoveReport),
    "promote_replica": (PromoteRequest, Promotion),
    "resolve_move": (ResolveMove, MoveResolution),
    "docker_mounts": (DockerMountsRequest, DockerMounts),
    "reserve_name": (ReserveName, NameReserved),
    "release_name": (ReleaseName, Empty),
    "set_policy": (SetPolicy, PolicyInfo),
    "schedules": (Empty, ScheduleList),  # rpc/schedule_messages.py
    "prune_replica": (PruneReplica, ReplicaPruned),  # rpc/prune_messages.py
    "store_policy_copy": (StorePolicyCopy, Empty),
    "ping": (Ping, Pong),  # rpc/selffence_messages.py
    "lease_status": (Empty, LeaseStatus),
    "rejoin": (Rejoin, RejoinReport),
    "failover": (FailoverRequest, FailoverReport),  # rpc/failover_messages.py
}
