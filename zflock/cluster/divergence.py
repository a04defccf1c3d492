"""What `zflock rejoin` does with a stale copy (pure): docs/failover.md, "Rejoin".

A stale copy (a returning old primary, or the source of a superseded move)
shares history with the current primary up to their **newest common
snapshot** (by GUID, never by name). Everything it has after that is
**diverged**: writes the cluster never saw. Rejoin turns it back into a
replica:

* **incremental** (the default): the diverged data is first *preserved* -- the
  copy's newest snapshot is copied whole into a dataset of its own,
  `<volume>-diverged-<time>` beside the volumes, which zflock never lists as
  a copy, prunes or destroys -- then the copy is rolled back to the common
  snapshot (which destroys its later snapshots), and the primary sends what
  it has after it. With `--discard-diverged` nothing is preserved.
* **reseed** (`--reseed`, or where there is no common snapshot and the
  operator asked for it): the whole old dataset is kept, renamed to
  `<volume>-diverged-<time>` (or destroyed with `--discard-diverged`), and the
  primary sends the volume in full.

No common snapshot and no `--reseed` is a refusal that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from zflock.cluster.ownership import ROLE_PRIMARY
from zflock.errors import ZflockError

Mode = Literal["incremental", "reseed"]

# The name of a dataset keeping a stale copy's diverged data, beside the volumes.
DIVERGED_INFIX = "-diverged-"
# On that dataset: which volume, by id, and the epoch its copy lost to.
PROP_DIVERGED_FROM = "zflock:diverged-from"


class RejoinRefused(ZflockError):
    """The copy cannot be rejoined as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Snap:
    name: str
    guid: int


@dataclass(frozen=True)
class Copy:
    node: str
    volume_id: str
    role: str
    epoch: int
    stale: bool = False


@dataclass(frozen=True)
class RejoinPlan:
    mode: Mode
    common: Snap | None  # the snapshot rolled back to (None: reseed)
    diverged: tuple[Snap, ...]  # this copy's snapshots after it: destroyed on this copy
    preserve: Snap | None  # copied aside before anything is destroyed (incremental)
    keep_dataset: bool  # reseed: rename the old dataset aside (else: destroy it)


def diverged_dataset(pool_root: str, volume: str, now: datetime) -> str:
    return f"{pool_root}/{volume}{DIVERGED_INFIX}{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def check_copies(volume: str, local: Copy, primary: Copy | None) -> None:
    """Is `local` a copy that may be rejoined to `primary`? RejoinRefused if not."""
    if primary is None:
        raise RejoinRefused(f"no copy of {volume} on the primary's node")
    if primary.volume_id != local.volume_id:
        raise RejoinRefused(
            f"the copies of {volume} on {local.node} and {primary.node} are different volumes "
            f"(ids {local.volume_id} and {primary.volume_id})"
        )
    if primary.role != ROLE_PRIMARY or primary.stale:
        raise RejoinRefused(f"{primary.node} holds a {primary.role} of {volume}, not its primary")
    if local.role == ROLE_PRIMARY and not local.stale and local.epoch >= primary.epoch:
        raise RejoinRefused(
            f"{local.node} holds the primary of {volume} (epoch {local.epoch}, {primary.node}'s "
            f"is {primary.epoch}): rejoin the other copy, or move the volume"
        )


def plan_rejoin(
    volume: str,
    local: Sequence[Snap],
    remote: Sequence[Snap],
    *,
    reseed: bool,
    discard: bool,
) -> RejoinPlan:
    """The plan for one copy; `local` and `remote` oldest first."""
    if reseed:
        return RejoinPlan("reseed", None, tuple(local), None, keep_dataset=not discard)
    theirs = {s.guid for s in remote}
    common = next((s for s in reversed(local) if s.guid in theirs), None)
    if common is None:
        raise RejoinRefused(
            f"no common snapshot between this copy of {volume} and its primary's: rejoin "
            "with --reseed (keeps this copy renamed aside, then copies the volume in full)"
        )
    after = tuple(local[[s.guid for s in local].index(common.guid) + 1 :])
    preserve = after[-1] if after and not discard else None
    return RejoinPlan("incremental", common, after, preserve, keep_dataset=True)
