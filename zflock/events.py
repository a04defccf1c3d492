"""Typed events: what happened in the agent, for whoever observes it.

Producers call `observer.emit(event)` with one of the frozen dataclasses
below; consumers (the Prometheus exporter in `zflock/agent/metrics.py`
today; jobs and the CLI's progress later) implement `Observer`. The
observer is passed in, never looked up, so a test or a second agent in the
same process has its own.

Pure and importable by every layer (docs/design.md, "Where things live"):
no I/O, no imports from the rest of zflock. `emit` is called on the agent's
event loop (or from whatever thread runs the producer) and must not block:
an observer records and returns.

Label values that end up in metrics are bounded by construction: volume
and node names, and the `Literal` categories below; never snapshot names
or move ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger("zflock.events")

# Why a replication failed, in categories an operator acts on differently.
FailureReason = Literal[
    "conflict",  # the plan refused: diverged, no common snapshot, not ours (needs a person)
    "stale_source",  # the peer has seen a higher epoch: this copy is stale
    "unreachable",  # the peer's agent could not be reached
    "busy",  # the volume was locked by another operation, or ZFS said busy
    "no_space",  # a pool ran out of space
    "verify",  # the received stream or GUID did not match
    "zfs",  # another ZFS command failure
    "remote",  # the peer ran the request and it failed there
    "cancelled",  # the agent stopped
    "other",
]
FAILURE_REASONS: tuple[FailureReason, ...] = (
    "conflict", "stale_source", "unreachable", "busy", "no_space", "verify", "zfs",
    "remote", "cancelled", "other",
)  # fmt: skip

# How a move ended, seen from its source's agent.
MoveOutcome = Literal[
    "moved",  # the destination is the primary
    "rolled_back",  # the move did not happen; the source is the writable primary again
    "in_doubt",  # the source stays fenced until recovery learns what the destination did
    "failed",  # any other error (refused before a change, hook failure, ...)
]
MOVE_OUTCOMES: tuple[MoveOutcome, ...] = ("moved", "rolled_back", "in_doubt", "failed")


@dataclass(frozen=True)
class AgentStarted:
    node: str
    version: str
    zfs_implementation: str
    zfs_version: str


@dataclass(frozen=True)
class ReplicationFinished:
    """A replication run to one peer succeeded: the peer now holds `snapshot_time`'s snapshot."""

    volume: str
    peer: str
    bytes: int  # sent in this run (0 when up to date)
    seconds: float  # the whole run, connect to verify
    stream_seconds: float  # the time spent streaming (the sum of the steps)
    snapshot_time: int  # unix seconds: creation of the newest snapshot the peer now holds
    finished_at: float  # unix seconds


@dataclass(frozen=True)
class ReplicationFailed:
    volume: str
    peer: str
    reason: FailureReason


@dataclass(frozen=True)
class MoveFinished:
    volume: str
    destination: str
    outcome: MoveOutcome
    downtime_seconds: float | None  # known only when the move completed
    total_seconds: float


@dataclass(frozen=True)
class ZfsCommandFinished:
    command: str  # "zfs" or "zpool"
    subcommand: str  # "list", "get", "snapshot", ... (or "other")
    seconds: float
    ok: bool


@dataclass(frozen=True)
class CopiesListed:
    """The agent listed all of its copies: which are fenced (a primary that is read-only or
    carries an unfinished move's marker) and which are labelled stale (`zflock:stale`).
    Replaces what an earlier listing said."""

    fenced: frozenset[str]
    primaries: frozenset[str]
    stale: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StaleCopySeen:
    """This node's copy of `volume` is stale: a peer holds a higher epoch (learned when a
    replication was refused). Cleared by a listing where the copy is no longer a primary."""

    volume: str
    epoch: int
    newer_epoch: int


@dataclass(frozen=True)
class JobStarted:
    kind: str  # "replicate", "move"


@dataclass(frozen=True)
class JobEnded:
    kind: str
    state: str  # "done" | "failed"


@dataclass(frozen=True)
class ScheduleLate:
    """A scheduled replication started `seconds` after it was due (the scheduler, issue 11)."""

    seconds: float


# What the move's pre-copy decided after a round (zflock.move.converge's actions).
RoundDecision = Literal["continue", "cutover", "abort"]


@dataclass(frozen=True)
class StreamProgressed:
    """A replication step is streaming (a few per second at most): for jobs and the CLI's bars.

    `step` names the step as the replication driver does ("full @snap", ...); a move
    prefixes its phase ("pre-copy round 2: ...")."""

    volume: str
    step: str
    bytes: int
    total: int | None
    rate: float  # bytes per second


@dataclass(frozen=True)
class PrecopyRound:
    """A move's pre-copy round ended; `decision` is what comes next (zflock.move.converge)."""

    volume: str
    round: int
    kind: str  # the first step's kind (zflock.replication.endpoint.StepHeader), or "none"
    bytes: int
    seconds: float
    decision: RoundDecision
    reason: str


@dataclass(frozen=True)
class CutoverStep:
    """A step of a move's cutover ended (or "rollback" began)."""

    volume: str
    step: str  # "pre-cutover hooks", "fence", "final delta", "verify", "promote", ...
    seconds: float


def move_phase_after(event: PrecopyRound | CutoverStep) -> str:
    """What a move does after `event`: the label of its next streams and its job's step."""
    if isinstance(event, PrecopyRound):
        return f"pre-copy round {event.round + 1}"
    return "cutover"


Event = (
    AgentStarted
    | ReplicationFinished
    | ReplicationFailed
    | MoveFinished
    | ZfsCommandFinished
    | CopiesListed
    | StaleCopySeen
    | JobStarted
    | JobEnded
    | ScheduleLate
    | StreamProgressed
    | PrecopyRound
    | CutoverStep
)


class Observer(Protocol):
    def emit(self, event: Event) -> None: ...


class NullObserver:
    """Observes nothing: the default where no one listens."""

    def emit(self, event: Event) -> None:
        pass


NO_OBSERVER = NullObserver()


class FanOut:
    """One observer that hands every event to several; one that raises does not stop the rest."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def emit(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer.emit(event)
            except Exception:
                # Observing must never break the operation observed.
                log.exception("observer %r failed on %r", observer, event)
