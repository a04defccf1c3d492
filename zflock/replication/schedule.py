"""The replication scheduler's decisions (pure: state and a clock in, decisions out).

The primary's agent keeps one `Link` per (volume, target node) of every
volume whose policy is continuous (`policy.py`). Its loop
(`zflock/agent/scheduler.py`) only executes what these functions decide:

* **when** a link runs next: `every` seconds after the last run STARTED
  (so a run's duration does not add drift), with jitter, never sooner than
  `Timing.min_gap` after it ended (a sync slower than its interval runs
  back to back, never in a hot loop). A new link's first run is spread
  uniformly over one interval, so 300 volumes set up at once do not all
  start in the same second.
* **after a failure**: capped exponential backoff, `Backoff.first` doubling
  up to `Backoff.ceiling` (Proxmox's pvesr retries a few times, then every
  30 minutes; the ceiling here is the same 30 minutes). The delay never
  decreases while failures continue, never exceeds the ceiling, and never
  goes below `first`: no hot loop even if every run fails at once.
* **which** due links start now (`pick`): at most `limit` streams per
  node at once, and at most ONE running link per VOLUME. One per volume,
  not only one per (volume, target), because a run ends with pruning: the
  prune after one target's sync must not destroy a snapshot another
  target's stream is still sending from, and two runs must not take two
  snapshots of the volume in the same second. The most overdue go first.
* **after a move** (`after_move`): the direction switches, as Proxmox does
  when a guest migrates to its replication target. If the volume moved to
  one of its targets, that target is replaced, in place, by the old
  primary: the new primary's agent takes over the schedule (the policy is
  on the volume), and the old primary, now a replica sharing the move's
  final snapshot, is kept by incrementals with no full resend. If it moved
  to a node that was not a target, the targets stay as they are (the
  operator asked for that many replicas; the old primary's copy is left
  as an unkept replica until someone adds it with `--to`).

Times are seconds on one clock the caller chooses (the agent uses the
monotonic clock); randomness comes from a `random.Random` passed in.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from zflock.replication.policy import (
    POLICY_PROPERTIES,
    PROP_POLICY_SERIAL,
    DamagedPolicy,
    ReplicationPolicy,
    policy_from_properties,
    policy_properties,
    policy_serial,
)


@dataclass(frozen=True)
class Backoff:
    """Retry delays after consecutive failures: first * factor**(n-1), capped."""

    first: float = 10.0
    factor: float = 2.0
    ceiling: float = 1800.0

    def __post_init__(self) -> None:
        if not (self.first >= 1 and self.factor >= 1 and self.ceiling >= self.first):
            raise ValueError(f"unusable backoff {self}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (failures >= 1)."""
        if failures < 1:
            raise ValueError(f"delay() needs at least one failure, got {failures}")
        # Stop multiplying once capped: a link failing for a week must not
        # overflow a float.
        delay = self.first
        for _ in range(failures - 1):
            delay *= self.factor
            if delay >= self.ceiling:
                return self.ceiling
        return min(delay, self.ceiling)


@dataclass(frozen=True)
class Timing:
    jitter: float = 0.1  # a run is up to +-5% (jitter/2) of the interval early or late
    min_gap: float = 1.0  # seconds between the end of a run and the next start of the link
    backoff: Backoff = Backoff()


LinkKey = tuple[str, str]  # (volume, target node)


@dataclass(frozen=True)
class Link:
    """The schedule of one (volume, target): what the agent would show in `status`."""

    volume: str
    target: str
    every: float
    next_run: float
    running: bool = False
    failures: int = 0  # in a row; 0 after a success
    last_error: str | None = None
    last_success: float | None = None

    @property
    def key(self) -> LinkKey:
        return (self.volume, self.target)


def first_run(volume: str, target: str, every: float, now: float, rng: random.Random) -> Link:
    """A new link, its first run spread over the coming interval."""
    return Link(volume, target, every, next_run=now + rng.random() * every)


def started(link: Link) -> Link:
    return replace(link, running=True)


def deferred(link: Link, now: float, delay: float) -> Link:
    """The link put back, not run, for `delay` seconds (its volume was busy: not a failure)."""
    return replace(link, running=False, next_run=now + max(delay, Timing.min_gap))


def after_run(
    link: Link,
    started_at: float,
    finished_at: float,
    error: str | None,
    rng: random.Random,
    timing: Timing = Timing(),
) -> Link:
    """The link after a run that started and finished at these times (error None = success)."""
    if error is None:
        spread = link.every * timing.jitter * (rng.random() - 0.5)
        next_run = max(started_at + link.every + spread, finished_at + timing.min_gap)
        return replace(
            link,
            running=False,
            failures=0,
            last_error=None,
            last_success=finished_at,
            next_run=next_run,
        )
    failures = link.failures + 1
    # Jitter only lengthens a retry, and the cap applies after it.
    delay = min(
        timing.backoff.ceiling,
        timing.backoff.delay(failures) * (1 + timing.jitter * rng.random()),
    )
    return replace(
        link,
        running=False,
        failures=failures,
        last_error=error,
        next_run=finished_at + max(delay, timing.min_gap),
    )


def pick(links: Iterable[Link], now: float, limit: int) -> tuple[LinkKey, ...]:
    """The due links to start now: most overdue first, within the limits above."""
    links = tuple(links)
    running = [link for link in links if link.running]
    busy_volumes = {link.volume for link in running}
    free = limit - len(running)
    chosen: list[LinkKey] = []
    due = sorted(
        (link for link in links if not link.running and link.next_run <= now),
        key=lambda link: (link.next_run, link.volume, link.target),
    )
    for link in due:
        if len(chosen) >= free:
            break
        if link.volume in busy_volumes:
            continue
        busy_volumes.add(link.volume)
        chosen.append(link.key)
    return tuple(chosen)


def next_wakeup(links: Iterable[Link]) -> float | None:
    """When the loop next has something to decide (besides a run finishing)."""
    idle = [link.next_run for link in links if not link.running]
    return min(idle, default=None)


def reconcile(
    volume: str,
    links: Sequence[Link],
    policy: ReplicationPolicy | None,
    now: float,
    rng: random.Random,
) -> tuple[Link, ...]:
    """The links of `volume` under `policy` (None, or not continuous: none).

    Call it with the policy read from the volume whenever it may have
    changed, and with None on a node that is not the volume's primary (a
    demoted primary stops sending). A continuing target keeps its state; a
    shorter interval brings its next run forward; a removed target is
    dropped (a run still going finishes, and its result is ignored).
    """
    if policy is None or policy.every is None:
        return ()
    every = float(policy.every)
    current = {link.target: link for link in links if link.volume == volume}
    result = []
    for target in policy.targets:
        link = current.get(target)
        if link is None:
            result.append(first_run(volume, target, every, now, rng))
        elif link.every != every:
            next_run = min(link.next_run, now + every) if link.failures == 0 else link.next_run
            result.append(replace(link, every=every, next_run=next_run))
        else:
            result.append(link)
    return tuple(result)


def after_move(policy: ReplicationPolicy, old_primary: str, new_primary: str) -> ReplicationPolicy:
    """The policy once the volume's primary moved from `old_primary` to `new_primary`."""
    if new_primary not in policy.targets or old_primary == new_primary:
        return policy
    targets = tuple(
        old_primary if target == new_primary else target
        for target in policy.targets
        if target != old_primary  # cannot already be a target, but never list it twice
    )
    return replace(policy, targets=targets)


def policy_after_move(
    props: Mapping[str, str | None], old_primary: str, new_primary: str
) -> dict[str, str | None]:
    """The policy properties the new primary gets, from those of the old one.

    A move or a failover carries them itself (zflock sends without `-p`, so
    they do not travel in the stream). Each of the four properties is in the
    result: a value to set, or None to remove. No policy stays no policy (a
    leftover from the new primary's own past is removed); a damaged one
    travels as it is, so it is shown damaged there too, never read as none;
    a sound one gets `after_move`: the direction switches. The serial
    (`zflock:policy-serial`, 0 when not carried) goes one up: a carried policy
    is a change, ordered after every copy the old primary sent.
    """
    present = {p: props.get(p) for p in POLICY_PROPERTIES}
    serial = {PROP_POLICY_SERIAL: str(policy_serial(props.get(PROP_POLICY_SERIAL)) + 1)}
    try:
        policy = policy_from_properties(present)
    except DamagedPolicy:
        return {**present, **serial}
    if policy is None:
        return {**dict.fromkeys(POLICY_PROPERTIES), **serial}
    return {**policy_properties(after_move(policy, old_primary, new_primary)), **serial}


@dataclass(frozen=True)
class StoredPolicy:
    """A policy an answering node holds for a volume: a replica's copy of its primary's
    (`sender` set), or a copy's own live policy (a leftover of its days as primary)."""

    node: str
    serial: int
    properties: Mapping[str, str]  # POLICY_PROPERTIES without None; {}: no policy
    sender: str | None = None  # the primary that sent this copy; None: the node's own
    sent_at: float | None = None  # when (unix s, the sender's clock)


@dataclass(frozen=True)
class Adopted:
    """What a failover's promotion stores: `properties` as a move carries them (the
    four, and the serial of the copy adopted: the promotion adds one)."""

    properties: dict[str, str]
    policy: ReplicationPolicy | None  # the new primary's policy; None: none
    source: StoredPolicy | None  # the copy adopted; None: no answering node had any


def policy_after_failover(stored: Sequence[StoredPolicy], new_primary: str) -> Adopted:
    """The policy the promoted replica keeps after a failover (docs/failover.md).

    The copy with the highest serial wins (ties, which are the same change: a
    replica's copy before a leftover, then the one sent last, then by node name).
    Its targets lose the new primary; nobody is added (the dead old primary comes
    back stale and is kept again only once it rejoins and an operator adds it). No
    targets left, or no policy in the copy: no policy. A copy whose policy does not
    parse is left out by the caller.
    """
    if not stored:
        return Adopted({}, None, None)
    best = max(stored, key=lambda s: (s.serial, s.sender is not None, s.sent_at or 0, s.node))
    serial = {PROP_POLICY_SERIAL: str(best.serial)}
    policy = policy_from_properties(best.properties)
    if policy is not None:
        kept = tuple(t for t in policy.targets if t != new_primary)
        policy = replace(policy, targets=kept) if kept else None
    if policy is None:
        return Adopted(serial, None, best)
    values = policy_properties(policy)
    props = {k: v for k, v in values.items() if v is not None}
    return Adopted({**props, **serial}, policy, best)


# -- how far behind a replica is (for `zflock ls`) ---------------------------------

LagState = Literal["ok", "behind", "failing"]


def replica_lag(
    now: float, replica_time: float | None, primary_time: float | None, continuous: bool
) -> float | None:
    """Seconds of the primary's data the replica may lack; None when it has no snapshot.

    Under a continuous policy the primary is assumed written all the time
    (zfs-fuse cannot tell when it last was), so the lag is the age of the
    replica's newest snapshot: what a failover now could lose, at most.
    Without one, the reference is the primary's newest snapshot: a replica
    holding it is not behind anything zflock knows of.
    """
    if replica_time is None:
        return None
    reference = now if continuous or primary_time is None else primary_time
    return max(0.0, reference - replica_time)


def lag_state(lag: float | None, every: float | None, failures: int) -> LagState:
    """ok / behind / failing: failing while the primary's last runs to it failed;
    behind when its lag exceeds two intervals (or, without a schedule, at all)."""
    if failures > 0:
        return "failing"
    if lag is None:
        return "behind"
    if every is None:
        return "ok" if lag == 0 else "behind"
    return "ok" if lag <= 2 * every else "behind"


# -- how late runs start (for `zflock status` and the scale benchmark) ------------

# How many of the latest lateness values a scheduler keeps for `status`: a reader
# polling every few seconds misses none even with hundreds of links (each value
# is a float on the wire; 512 of them cost a few KiB in a `schedules` answer).
LATENESS_KEPT = 512


@dataclass
class LatenessLog:
    """How late the last runs started (seconds, oldest first), and how many ever did.

    `count` numbers every value ever added, so a reader that remembers the
    count it saw last can take exactly the new values (`lateness_since`).
    """

    kept: int = LATENESS_KEPT
    values: deque[float] = field(default_factory=deque)
    count: int = 0

    def add(self, seconds: float) -> None:
        self.values.append(round(max(0.0, seconds), 3))
        while len(self.values) > self.kept:
            self.values.popleft()
        self.count += 1


def lateness_since(seen: int, count: int, recent: Sequence[float]) -> tuple[list[float], int]:
    """The values recorded after the reader's `seen`-th, and how many of them are lost.

    `count` and `recent` are a `LatenessLog`'s count and values as answered;
    values older than those still kept are lost (the reader polled too rarely).
    A count below `seen` means the scheduler restarted: everything kept is new.
    """
    fresh = count - seen if count >= seen else count
    taken = list(recent[max(0, len(recent) - fresh) :]) if fresh > 0 else []
    return taken, fresh - len(taken)
