"""The agent's edge to zflock/events.py: turn what happened here into typed events.

The events are emitted where replication cycles and moves end (link.py,
move_source.py), where jobs start and end (jobs.py) and around every `zfs`
command (ObservedRunner); the drivers emit their own progress events. The
decisions (which category a failure is, which copies are fenced) are pure
functions, unit-tested in tests/unit/test_metrics*.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zflock.agent.locks import VolumeBusy
from zflock.events import (
    NO_OBSERVER,
    CopiesListed,
    FailureReason,
    MoveOutcome,
    Observer,
    StaleCopySeen,
    ZfsCommandFinished,
)
from zflock.move.driver import MoveFailed, MoveInDoubt
from zflock.replication.conflicts import EpochNewerOnDestination, ReplicationConflict
from zflock.replication.driver import VerifyFailed
from zflock.replication.zfs_endpoint import ReceiveRefused
from zflock.rpc.errors import NodeUnreachable, RemoteError
from zflock.rpc.messages import VolumeInfo
from zflock.zfs.errors import DatasetBusy, OutOfSpace, StreamMismatch, ZfsError
from zflock.zfs.runner import Completed, Runner

# A failure reported by the peer arrives as RemoteError with the remote
# exception's class name: the same categories by name.
_REMOTE_KINDS: dict[str, FailureReason] = {
    "OutOfSpace": "no_space",
    "DatasetBusy": "busy",
    "VolumeBusy": "busy",
    "StreamMismatch": "verify",
    "DestinationModified": "verify",
    "NoMatchingSnapshot": "verify",
    "ReceiveRefused": "conflict",
}
_SUBCOMMAND = re.compile(r"[a-z][a-z-]{0,20}")


def failure_reason(exc: BaseException) -> FailureReason:
    """The category of a replication failure, for `zflock_replication_failures_total`."""
    match exc:
        case asyncio.CancelledError():
            return "cancelled"
        case EpochNewerOnDestination():
            return "stale_source"
        case ReplicationConflict() | ReceiveRefused():
            return "conflict"
        case NodeUnreachable():
            return "unreachable"
        case RemoteError():
            return _REMOTE_KINDS.get(exc.kind, "remote")
        case VolumeBusy() | DatasetBusy():
            return "busy"
        case OutOfSpace():
            return "no_space"
        case VerifyFailed() | StreamMismatch():
            return "verify"
        case ZfsError():
            return "zfs"
    return "other"


def move_outcome(exc: BaseException | None) -> MoveOutcome:
    """How a move job ended: None for no error."""
    match exc:
        case None:
            return "moved"
        case MoveInDoubt():
            return "in_doubt"
        case MoveFailed():
            return "rolled_back"
    return "failed"


def stale_copy(volume: str, exc: BaseException) -> StaleCopySeen | None:
    """A refused replication that proves this node's copy stale, as an event (else None)."""
    if isinstance(exc, EpochNewerOnDestination):
        return StaleCopySeen(volume, exc.source_epoch, exc.destination_epoch)
    return None


def copies_listed(copies: Iterable[VolumeInfo]) -> CopiesListed:
    """Which of this node's copies are fenced primaries or stale, from a full listing."""
    copies = list(copies)
    primaries = [c for c in copies if c.role == "primary"]
    return CopiesListed(
        fenced=frozenset(c.name for c in primaries if c.readonly or c.move),
        primaries=frozenset(c.name for c in primaries),
        # zflock:stale (docs/move.md, "Stale copies"): a former source that lost to an epoch.
        stale=frozenset(c.name for c in copies if c.stale),
    )


def zfs_command(argv: Sequence[str], seconds: float, ok: bool) -> ZfsCommandFinished:
    """The event for one finished command; the subcommand label is bounded by a pattern."""
    command = argv[0].rsplit("/", 1)[-1] if argv else "?"
    sub = argv[1] if len(argv) > 1 and _SUBCOMMAND.fullmatch(argv[1]) else "other"
    return ZfsCommandFinished(
        command=command if command in ("zfs", "zpool") else "other",
        subcommand=sub,
        seconds=seconds,
        ok=ok,
    )


@dataclass(frozen=True)
class ObservedRunner(Runner):
    """A Runner that reports every command's duration (streams are measured by replication)."""

    observer: Observer = NO_OBSERVER

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        started = time.monotonic()
        ok = False
        try:
            done = await super().run(argv, input=input, check=check)
            ok = done.returncode == 0
            return done
        finally:
            self.observer.emit(zfs_command(argv, time.monotonic() - started, ok))
