"""Operations of self-fencing and rejoin (docs/failover.md): `ping`, `lease_status`, `rejoin`.

Kept apart from messages.py (near its size limit); OPERATIONS there lists them.
Durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Ping:
    """The cheapest request an agent serves: it proves the two nodes are in contact."""

    node: str  # the asking node


@dataclass(frozen=True)
class Pong:
    node: str  # the answering node


@dataclass(frozen=True)
class Unreachable:
    node: str
    seconds: float | None  # since the last answer (None: it answers now)


@dataclass(frozen=True)
class LeaseStatus:
    """One agent's view of the majority lease (zflock.cluster.lease)."""

    node: str
    active: bool  # False: fewer than 3 inventory nodes, self-fencing is off
    held: bool  # a majority answers now
    lost_for: float | None  # seconds without a majority (None while held; -1: never had one)
    self_fence_after: float
    margin: float  # what a failover adds to self_fence_after before it may promote
    peers: list[Unreachable] = field(default_factory=list)
    fenced: list[str] = field(default_factory=list)  # volumes this node holds fenced


@dataclass(frozen=True)
class Rejoin:
    """Make this node's stale copy of `name` a replica of the primary on `primary` again."""

    name: str
    primary: str
    discard_diverged: bool = False
    reseed: bool = False


@dataclass(frozen=True)
class RejoinReport:
    volume: str
    node: str
    primary: str
    epoch: int  # the primary's
    common: str | None  # the newest common snapshot rolled back to (None: reseeded)
    preserved: str | None  # the dataset keeping the diverged data (None: nothing to keep)
    discarded: list[str]  # snapshots (or the dataset, with --reseed) destroyed
    mode: str  # "incremental" | "reseed"
    bytes: int  # sent by the primary to catch up
    seconds: float
    warnings: list[str] = field(default_factory=list)
