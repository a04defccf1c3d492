"""The majority lease and what an agent does with its primaries by it (pure).

**The lease.** An agent holds the lease while it is in contact with a majority
of the inventory's nodes, itself included: more than half of them. Every
agent pings every other inventory node on a bounded interval (each ping with
a deadline: zflock/agent/selffence.py) and keeps two times per node:

* `contact`: for its own lease, only its own answered pings, each at the
  moment it was *sent* (a round trip proves both directions; a ping that merely
  arrived from that node proves nothing about this node's answers reaching it);
* `heard`: for `unreachable_for` (what a failover asks), the latest: when the
  answer to its own ping *arrived*, or when a ping from that node arrived.

So for every contact, the other side's `heard` is at or after this side's
`contact` (the ping arrived there after it was sent). Counting an arrived ping
as contact broke this: with the answers lost, the peer hears nothing while this
side keeps its lease (the property test found it). The
lease was last known held at `since`: the time of the k-th most recent
contact, k being the number of peers a majority needs besides this node.
`since + self_fence_after` is when a primary must be fenced.

**Why it gives at most one writer** (docs/failover.md, "Self-fencing"):
`zflock failover` promotes only when every node of a majority that answers it
reports the old primary unreachable for more than `self_fence_after` plus a
margin (`unreachable_for`, from `heard`). Two majorities of one inventory
always share a node: the primary's own majority contacts are at or before
what some node of the failover's majority heard, so the primary's lease ran
out at least `self_fence_after + margin` before the failover, and its
watcher (every half ping interval) fenced it by then. `Timing.margin`
covers the watcher's tick and the fence's own ZFS commands
(tests/unit/test_lease.py checks the inequality over random histories).

**Per copy** (`decide`): a primary whose lease ran out is fenced (stop hook,
`readonly=on`, unmount, `zflock:fenced`); a fenced primary is unfenced only
with the lease held *and* every inventory node having answered the epoch
comparison with no higher epoch for the volume; a primary that sees a
higher epoch anywhere is fenced for good and marked stale (its writes since
the last common snapshot are kept in a `zflock-diverged-<time>` snapshot).
Copies in a move (a `zflock:move` marker) are left to the move's recovery.

Times are monotonic seconds (`time.monotonic()`) except `Fenced.at`, which is
stored on the volume (unix seconds, for people).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from zflock.cluster.ownership import ROLE_PRIMARY

# Where the reason a copy is fenced is recorded: `zflock:fenced=<reason>/<unix time>`.
PROP_FENCED: Final = "zflock:fenced"
FenceReason = Literal["no-majority", "epoch-unknown", "unreadable"]
FENCE_REASONS: tuple[FenceReason, ...] = ("no-majority", "epoch-unknown")

# The name of the snapshot keeping a returning primary's writes since it was cut off.
DIVERGED_PREFIX: Final = "zflock-diverged-"

# The smallest cluster where a majority lease means something: with two nodes
# either one alone is not a majority, so the primary would fence whenever its
# replica is down. Below it self-fencing is off (docs/failover.md).
MIN_LEASE_NODES: Final = 3

SELF_FENCE_MIN: Final = 2.0
SELF_FENCE_MAX: Final = 3600.0


def majority(nodes: int) -> int:
    """How many nodes, this one included, make a majority of `nodes`."""
    return nodes // 2 + 1


# Time for the fence's `zfs set readonly=on` to land once the watcher saw it due.
FENCE_LANDS = 5.0


@dataclass(frozen=True)
class Timing:
    """The ping loop's timing, all derived from `self_fence_after` (agent.toml), and how
    long the fence itself may take once due (`fence_time`)."""

    self_fence_after: float
    fence_time: float = FENCE_LANDS

    @property
    def interval(self) -> float:
        """Seconds between pings to one node: about six chances before the lease runs out."""
        return min(max(self.self_fence_after / 6, 0.5), 5.0)

    @property
    def deadline(self) -> float:
        """How long one ping may take (connecting included) before it counts as lost."""
        return min(max(self.self_fence_after / 3, 1.0), 10.0)

    @property
    def fresh(self) -> float:
        """An answer this recent means the node answers *now* (one round and its deadline)."""
        return self.interval + self.deadline

    @property
    def margin(self) -> float:
        """What `zflock failover` must add to `self_fence_after` before it may promote:
        the watcher's tick, and the time the fence takes to be whole (`fence_time`)."""
        return self.interval + self.deadline + self.fence_time


def fence_time(readonly_fences_open_files: bool, stop_hook: float, stop_holders: float) -> float:
    """How long a due self-fence takes, at most, before no write can succeed. Where
    `readonly=on` refuses writes through files opened before it too (OpenZFS), its
    `zfs set` is the fence. Where not (zfs-fuse), the fence is whole only once no
    process holds a file on it open for writing: after the stop hook (`stop_hook`: its
    timeout where one is configured, else 0) and the stopping of the writers it left
    (`stop_holders`: their bound, 0 if that is off -- then nothing bounds it)."""
    if readonly_fences_open_files:
        return FENCE_LANDS
    return FENCE_LANDS + stop_hook + stop_holders


@dataclass(frozen=True)
class Contacts:
    """What one agent knows about its peers: when it last had an answer from each.

    `contact[n]` and `heard[n]`: the module docstring. `started`: when this agent
    began pinging (nothing heard yet means "unreachable since at least then").
    """

    me: str
    nodes: frozenset[str]  # the inventory, this node included
    started: float
    contact: Mapping[str, float]
    heard: Mapping[str, float]


@dataclass(frozen=True)
class Lease:
    active: bool  # False: fewer than MIN_LEASE_NODES nodes, self-fencing is off
    held: bool  # a majority answered within `fresh` seconds
    since: float | None  # the last moment a majority was in contact (None: never seen)
    fence_due: bool  # held is False and it has been so for self_fence_after seconds

    def lost_for(self, now: float) -> float:
        """Seconds since a majority was last in contact (0 while held; inf if never)."""
        if self.held:
            return 0.0
        return math.inf if self.since is None else max(0.0, now - self.since)


def evaluate(contacts: Contacts, timing: Timing, now: float) -> Lease:
    """Is there a majority now, since when not, and is a fence due."""
    active = len(contacts.nodes) >= MIN_LEASE_NODES
    need = majority(len(contacts.nodes)) - (1 if contacts.me in contacts.nodes else 0)
    peers = sorted(
        (t for n, t in contacts.contact.items() if n in contacts.nodes and n != contacts.me),
        reverse=True,
    )
    if need <= 0:
        since: float | None = now
    elif len(peers) >= need:
        since = peers[need - 1]
    else:
        since = None
    held = since is not None and now - since <= timing.fresh
    due = active and not held and (since is None or now - since >= timing.self_fence_after)
    return Lease(active=active, held=held, since=since, fence_due=due)


def unreachable_for(contacts: Contacts, timing: Timing, node: str, now: float) -> float | None:
    """Seconds since this agent last heard from `node` (since it started, if never);
    None when it answers now (or is this node). From `heard`, the latest moment
    contact is proven: a failover that waits on it waits long enough."""
    if node == contacts.me:
        return None
    last = contacts.heard.get(node)
    if last is not None and now - last <= timing.fresh:
        return None
    return max(0.0, now - (last if last is not None else contacts.started))


# -- the fence label on a copy ---------------------------------------------------------


@dataclass(frozen=True)
class Fenced:
    """`zflock:fenced=<reason>/<unix time>`: this primary fenced itself (still role primary)."""

    reason: FenceReason
    at: int  # unix seconds

    def format(self) -> str:
        return f"{self.reason}/{self.at}"

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        why = {
            "no-majority": "cut off from a majority of the inventory",
            "epoch-unknown": "its agent could not compare epochs with every node yet",
            "unreadable": "its zflock:fenced value is damaged",
        }[self.reason]
        return f"fenced since {when}: {why}"


def parse_fenced(value: str | None) -> Fenced | None:
    """None for a copy not fenced by its agent; a damaged value still reads as fenced."""
    if value is None or value in ("", "-"):
        return None
    reason, _, at = value.partition("/")
    for known in FENCE_REASONS:
        if reason == known and at.isdigit():
            return Fenced(known, int(at))
    return Fenced("unreadable", 0)


def diverged_name(now: datetime) -> str:
    """`zflock-diverged-20261203T191500Z`: never one of zflock's own (pruned) snapshot names,
    whose shape is `zflock-<time>-<seq>` (zflock.replication.naming)."""
    return DIVERGED_PREFIX + now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def is_diverged(snapshot: str) -> bool:
    return snapshot.rpartition("@")[2].startswith(DIVERGED_PREFIX)


# -- what to do with each copy ---------------------------------------------------------

Action = Literal["keep", "fence", "unfence", "stale"]


@dataclass(frozen=True)
class LocalCopy:
    """One copy on this node, as the decision needs it."""

    name: str
    volume_id: str
    epoch: int
    role: str
    fenced: Fenced | None = None
    moving: bool = False  # a move marker: the move and its recovery decide
    stale: bool = False


@dataclass(frozen=True)
class Comparison:
    """The epochs other nodes reported: `answered` the nodes that listed their copies,
    `epochs` the highest epoch per volume id among them."""

    answered: frozenset[str]
    epochs: Mapping[str, int]

    def complete(self, nodes: frozenset[str], me: str) -> bool:
        return nodes - {me} <= self.answered


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    epoch: int = 0  # for "stale": the epoch it lost to
    fence_reason: FenceReason = "no-majority"


def decide(
    copy: LocalCopy,
    lease: Lease,
    comparison: Comparison | None,
    nodes: frozenset[str],
    me: str,
) -> Decision:
    """The rule of the module docstring for one copy. `comparison` is None when no
    epoch comparison was made (or none answered)."""
    if copy.moving:
        return Decision("keep", "a move is in progress: its recovery decides")
    if copy.role != ROLE_PRIMARY or copy.stale:
        return Decision("keep", "not a primary")
    higher = comparison.epochs.get(copy.volume_id, 0) if comparison else 0
    if higher > copy.epoch:
        return Decision("stale", f"another node reports epoch {higher}", epoch=higher)
    complete = comparison is not None and comparison.complete(nodes, me)
    if copy.fenced is not None:
        if not lease.active and complete:
            return Decision("unfence", "every node compared epochs; none is higher")
        if lease.active and lease.held and complete:
            return Decision("unfence", "a majority again, and no higher epoch on any node")
        return Decision("keep", "fenced until a majority answers and every node compared epochs")
    if lease.fence_due:
        return Decision("fence", "no majority of the inventory answers", fence_reason="no-majority")
    return Decision("keep", "the lease is held")


def decide_at_start(copy: LocalCopy, lease: Lease, comparison: Comparison | None,
                    nodes: frozenset[str], me: str) -> Decision:  # fmt: skip
    """At agent start, after the first round of pings: a primary is only left writable
    once every node compared epochs (a node that was down may have missed a failover).
    Self-fencing off (two nodes): compared if the peer answers, never fenced for it."""
    decision = decide(copy, lease, comparison, nodes, me)
    if decision.action != "keep" or copy.fenced is not None or copy.moving:
        return decision
    if copy.role != ROLE_PRIMARY or copy.stale or not lease.active:
        return decision
    if comparison is not None and comparison.complete(nodes, me):
        return decision
    return Decision(
        "fence", "not every node answered the epoch comparison at start",
        fence_reason="epoch-unknown",
    )  # fmt: skip


def fence_deadline(lease: Lease, timing: Timing) -> float | None:
    """When (monotonic) a primary must be fenced if nothing changes; None while held."""
    if lease.held or lease.since is None:
        return None
    return lease.since + timing.self_fence_after


def newest_common(local: Sequence[int], remote: Sequence[int]) -> int | None:
    """The newest of `local`'s snapshot GUIDs (oldest first) that `remote` also has."""
    theirs = set(remote)
    for guid in reversed(local):
        if guid in theirs:
            return guid
    return None
