"""What a scheduled replication remembers of both copies from one run to the next.

A run (agent/link.py, `cycle`) used to begin by reading both copies whole: this
copy with every snapshot (a `zfs get -r`), and the replica's state over the
connection (the same walk on the peer). On zfs-fuse a walk costs the daemon
about a millisecond per snapshot, and a copy kept every 30 s under a rule
like `1x1h(keep=all)` holds 120 of them: two walks a run, growing with the
history (docs/benchmarks.md). Both are known at the end of the run before:
this copy as its snapshot left it less what its pruning destroyed, and the
replica as its prune answer listed it (the receiver's own listing, not a
guess). So the next run starts from those.

Remembered state is used only when nothing else can have changed either copy
through zflock in between: the volume's lock here was taken by no one else
(`VolumeLocks.taken`: exactly one acquisition since, the run's own), nothing
acted on it without the lock (a self-fence that could not wait counts), the
run before ended well, and it is younger than MAX_AGE (which bounds how long
an operator's own `zfs` change on either node goes unseen). A wrong guess
cannot make a step unsafe: the receiver checks every step against its own
state (the base by name and GUID, its role and epoch), and ZFS refuses an
incremental whose base is not the replica's newest snapshot; a step that fails
makes the next run read both copies again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from zflock.agent.locks import VolumeLocks
from zflock.replication.model import ReplicaInfo, SnapRef
from zflock.zfs import DatasetState

# Seconds after which a run reads both copies again whatever it remembers.
MAX_AGE = 300.0


@dataclass(frozen=True)
class Carried:
    """Both copies as a run left them: what the next run may start from."""

    primary: DatasetState  # this copy: its snapshot added, what pruning destroyed gone
    replica: ReplicaInfo  # the peer's, with the snapshots its prune answer listed
    resume: bool  # both sides can resume a stream (as read at the last connect)


def after_prune(
    primary: DatasetState,
    destroyed: tuple[str, ...],
    replica: ReplicaInfo,
    listed: list[SnapRef],
    resume: bool,
) -> Carried:
    """`primary` (read after the run's snapshot) less the snapshots its pruning destroyed,
    and `replica` with the snapshots its prune answer `listed`."""
    gone = set(destroyed)
    kept = [s for s in primary.snapshots if s.name not in gone]
    snapshots = [replace(s, index=i) for i, s in enumerate(kept)]
    peer = replace(
        replica, snapshots=tuple(listed), resume_token=None, resume_to_guid=None,
        modified_since_last_snapshot=False,
    )  # fmt: skip
    return Carried(replace(primary, snapshots=snapshots), peer, resume)


@dataclass(frozen=True)
class Recall:
    """What `recall` hands a run, to give back to `keep`."""

    taken: int  # the volume lock's count when the run began
    read_at: float  # when the state it starts from was last read whole (now, if it reads)


@dataclass(frozen=True)
class _Kept:
    carried: Carried
    taken: int
    read_at: float


class LinkMemory:
    """One agent's memory of its scheduled links (module docstring)."""

    def __init__(self, locks: VolumeLocks, clock: Callable[[], float] = time.monotonic) -> None:
        self.locks = locks
        self.clock = clock
        self._kept: dict[tuple[str, str], _Kept] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def recall(self, volume: str, peer: str) -> tuple[Carried | None, Recall]:
        """For a run that holds the volume's lock now: what it may start from (None:
        read both copies), and what to hand back to `keep`. The age that counts is the
        time since both copies were last read whole, not since the last run: runs that
        each start from the one before would otherwise never read again."""
        kept = self._kept.pop((volume, peer), None)
        taken, now = self.locks.watch(volume), self.clock()
        if kept is None or taken != kept.taken + 1 or now - kept.read_at > MAX_AGE:
            return None, Recall(taken, now)
        return kept.carried, Recall(taken, kept.read_at)

    def keep(self, volume: str, peer: str, recall: Recall, carried: Carried | None) -> None:
        """What the run that `recall` began left (None: nothing to keep). Kept only if
        nothing else took or changed the volume while it ran."""
        if carried is None or self.locks.taken(volume) != recall.taken:
            self.forget(volume, peer)
            return
        self._kept[(volume, peer)] = _Kept(carried, recall.taken, recall.read_at)

    def forget(self, volume: str, peer: str) -> None:
        self._kept.pop((volume, peer), None)
        if not any(v == volume for v, _ in self._kept):
            self.locks.unwatch(volume)
