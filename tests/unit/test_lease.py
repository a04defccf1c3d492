"""The majority lease and the per-copy rule of self-fencing (zflock.cluster.lease), on plain data.

The tables pin each decision; the property test is the timing argument of
docs/failover.md: over random histories of pings in both directions (lost,
slow, nodes restarted and forgetting what they heard), whenever every node of
a majority reports the primary unreachable for more than `self_fence_after`
plus the margin, the primary's own lease said "fence" a margin earlier.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zflock.cluster.config import ConfigError, load_agent_config
from zflock.cluster.lease import (
    Comparison,
    Contacts,
    Fenced,
    Lease,
    LocalCopy,
    Timing,
    decide,
    decide_at_start,
    diverged_name,
    evaluate,
    fence_deadline,
    fence_time,
    is_diverged,
    majority,
    newest_common,
    parse_fenced,
    unreachable_for,
)
from zflock.cluster.ownership import parse_stale
from zflock.replication.naming import is_own

T = Timing(30.0)
NODES3 = frozenset({"n1", "n2", "n3"})


def contacts(me: str = "n1", nodes: frozenset[str] = NODES3, started: float = 0.0,
             **times: float) -> Contacts:  # fmt: skip
    return Contacts(me=me, nodes=nodes, started=started, contact=times, heard=times)


def test_majority_counts_this_node() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 2, 3, 3, 4, 4]


def test_timing_is_derived_and_bounded() -> None:
    assert (T.interval, T.deadline) == (5.0, 10.0)
    fast = Timing(3.0)
    assert (fast.interval, fast.deadline) == (0.5, 1.0)
    for after in (2.0, 5.0, 30.0, 3600.0):
        timing = Timing(after)
        # An answer counts as "now" for less than the lease lasts: a fence can be due.
        assert timing.fresh < after and timing.margin > timing.interval


def test_a_fresh_majority_holds_the_lease() -> None:
    lease = evaluate(contacts(n2=100.0), T, now=101.0)
    assert lease == Lease(active=True, held=True, since=100.0, fence_due=False)
    assert lease.lost_for(101.0) == 0.0


def test_the_lease_runs_out_from_the_last_majority_contact() -> None:
    c = contacts(n2=100.0, n3=90.0)  # one peer suffices in 3 nodes: the freshest counts
    assert not evaluate(c, T, now=100.0 + T.fresh + 1).held
    assert not evaluate(c, T, now=129.9).fence_due
    due = evaluate(c, T, now=130.0)
    assert due.fence_due and due.since == 100.0 and due.lost_for(130.0) == 30.0
    assert fence_deadline(due, T) == 130.0


def test_five_nodes_need_two_peers() -> None:
    nodes = frozenset({"n1", "n2", "n3", "n4", "n5"})
    c = contacts(nodes=nodes, n2=120.0, n3=100.0)  # the second freshest counts
    lease = evaluate(c, T, now=121.0)
    assert lease.since == 100.0 and not lease.held
    assert not evaluate(c, T, now=129.0).fence_due
    assert evaluate(c, T, now=130.0).fence_due


def test_never_a_majority_is_due_at_once() -> None:
    lease = evaluate(contacts(), T, now=1.0)
    assert lease.since is None and lease.fence_due and math.isinf(lease.lost_for(1.0))


def test_two_nodes_never_fence() -> None:
    nodes = frozenset({"n1", "n2"})
    lease = evaluate(contacts(nodes=nodes), T, now=1000.0)
    assert not lease.active and not lease.held and not lease.fence_due


def test_unreachable_for() -> None:
    c = contacts(n2=100.0)
    assert unreachable_for(c, T, "n2", 101.0) is None  # answers now
    assert unreachable_for(c, T, "n2", 200.0) == 100.0
    assert unreachable_for(c, T, "n3", 50.0) == 50.0  # never: since this agent started
    assert unreachable_for(c, T, "n1", 50.0) is None  # itself


def test_fenced_label_round_trips_and_damage_stays_fenced() -> None:
    label = Fenced("no-majority", 1764790000)
    assert parse_fenced(label.format()) == label
    assert "cut off from a majority" in label.describe()
    assert parse_fenced(None) is None and parse_fenced("-") is None
    assert parse_fenced("garbage") == Fenced("unreadable", 0)
    assert parse_fenced("no-majority/x") == Fenced("unreadable", 0)


def test_stale_failed_over_round_trips() -> None:
    stale = parse_stale("4/failed-over/")
    assert stale is not None and (stale.epoch, stale.reason) == (4, "failed-over")
    assert stale.describe().endswith("zflock-diverged snapshot)")


def test_a_diverged_snapshot_is_never_one_of_zflocks_own() -> None:
    from datetime import UTC, datetime

    name = diverged_name(datetime(2026, 12, 3, 19, 15, tzinfo=UTC))
    assert name == "zflock-diverged-20261203T191500Z"
    assert is_diverged(f"tank/v@{name}") and not is_own(name)


def test_newest_common() -> None:
    assert newest_common([1, 2, 3, 9], [1, 2, 3, 4]) == 3
    assert newest_common([1, 2], [5]) is None
    assert newest_common([], [1]) is None


# -- the per-copy rule -------------------------------------------------------------------

HELD = Lease(active=True, held=True, since=100.0, fence_due=False)
LOST = Lease(active=True, held=False, since=100.0, fence_due=False)
DUE = Lease(active=True, held=False, since=100.0, fence_due=True)
TWO = Lease(active=False, held=True, since=100.0, fence_due=False)
VID = "v-id"
ALL = Comparison(answered=frozenset({"n2", "n3"}), epochs={VID: 1})
SOME = Comparison(answered=frozenset({"n2"}), epochs={VID: 1})
HIGHER = Comparison(answered=frozenset({"n2"}), epochs={VID: 3})
FENCED = Fenced("no-majority", 1)


def copy(**kw: object) -> LocalCopy:
    base: dict[str, object] = dict(name="v", volume_id=VID, epoch=1, role="primary")
    return LocalCopy(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "local, lease, comparison, action",
    [
        (copy(), HELD, None, "keep"),
        (copy(), LOST, None, "keep"),  # not for long enough yet
        (copy(), DUE, None, "fence"),
        (copy(moving=True), DUE, HIGHER, "keep"),  # the move's recovery decides
        (copy(role="replica"), DUE, HIGHER, "keep"),
        (copy(stale=True, role="replica"), HELD, HIGHER, "keep"),
        (copy(), HELD, HIGHER, "stale"),  # seen anywhere, even holding the lease
        (copy(fenced=FENCED), HELD, HIGHER, "stale"),
        (copy(fenced=FENCED), HELD, ALL, "unfence"),
        (copy(fenced=FENCED), HELD, SOME, "keep"),  # one node has not compared yet
        (copy(fenced=FENCED), LOST, ALL, "keep"),  # no majority now
        (copy(fenced=FENCED), DUE, None, "keep"),
        (
            copy(fenced=FENCED, epoch=3),
            HELD,
            Comparison(frozenset({"n2", "n3"}), {VID: 3}),
            "unfence",
        ),  # equal is not higher
        (copy(), TWO, None, "keep"),
        (copy(fenced=FENCED), TWO, Comparison(frozenset({"n2", "n3"}), {}), "unfence"),
    ],
)
def test_decide(local: LocalCopy, lease: Lease, comparison: Comparison | None, action: str) -> None:
    assert decide(local, lease, comparison, NODES3, "n1").action == action


def test_stale_names_the_epoch_lost_to() -> None:
    assert decide(copy(), HELD, HIGHER, NODES3, "n1").epoch == 3


@pytest.mark.parametrize(
    "local, lease, comparison, action",
    [
        (copy(), HELD, ALL, "keep"),
        (copy(), HELD, SOME, "fence"),  # a node that was down may have missed a failover
        (copy(), HELD, None, "fence"),
        (copy(), DUE, None, "fence"),
        (copy(), TWO, None, "keep"),  # two nodes: never fenced for the lease
        (copy(), TWO, HIGHER, "stale"),
        (copy(moving=True), HELD, None, "keep"),
        (copy(role="replica"), HELD, None, "keep"),
    ],
)
def test_decide_at_start(
    local: LocalCopy, lease: Lease, comparison: Comparison | None, action: str
) -> None:
    assert decide_at_start(local, lease, comparison, NODES3, "n1").action == action


def test_fenced_at_start_because_the_epochs_are_unknown() -> None:
    assert decide_at_start(copy(), HELD, SOME, NODES3, "n1").fence_reason == "epoch-unknown"


# -- the timing argument ---------------------------------------------------------------


@dataclass(frozen=True)
class PingEvent:
    sender: int
    receiver: int
    sent: float
    there: float  # after `sent`: when it arrived (if it did)
    back: float  # after `there`: when the answer arrived (if it did)
    arrived: bool
    answered: bool


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[float], list[PingEvent], float, Timing]:
    """Every node pings every other one each interval (random phase and delays, as the
    pingers do); each link is cut at a random time (or never) and may heal later, one
    direction of an answer may be lost; nodes restart (forgetting) at random times."""
    rnd = random.Random(draw(st.integers(0, 2**32)))  # the noise; hypothesis picks seeds
    n = rnd.choice([3, 4, 5])
    timing = Timing(rnd.choice([2.0, 5.0, 30.0]))
    horizon = 4 * timing.self_fence_after
    started = [rnd.uniform(0, horizon / 3) if rnd.random() < 0.3 else 0.0 for _ in range(n)]
    down: dict[frozenset[int], tuple[float, float]] = {}
    for a in range(n):
        for b in range(a + 1, n):
            # Mostly the primary's (node 0's) links are cut: the interesting histories.
            cut = rnd.uniform(0, horizon) if rnd.random() < (0.8 if a == 0 else 0.2) else math.inf
            heal = cut + rnd.uniform(0, horizon) if rnd.random() < 0.3 else math.inf
            down[frozenset({a, b})] = (cut, heal)

    def up(a: int, b: int, at: float) -> bool:
        cut, heal = down[frozenset({a, b})]
        return not cut <= at < heal

    events = []
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            sent = rnd.uniform(0, timing.interval)
            while sent < horizon:
                there = sent + rnd.uniform(0, timing.deadline / 2)
                back = there + rnd.uniform(0, timing.deadline / 2)
                arrived = up(a, b, sent) and up(a, b, there)
                answered = arrived and up(a, b, back) and rnd.random() < 0.9
                events.append(PingEvent(a, b, sent, there, back, arrived, answered))
                sent += timing.interval
    now = draw(st.floats(timing.margin, horizon + timing.margin))
    return n, started, events, now, timing


def view(node: int, n: int, started: list[float], events: list[PingEvent], at: float) -> Contacts:
    """What `node`'s agent recorded by time `at` (selffence.py's rules)."""
    contact: dict[str, float] = {}
    heard: dict[str, float] = {}

    def saw(peer: int, c: float | None, h: float) -> None:
        key = f"n{peer}"
        if c is not None:
            contact[key] = max(contact.get(key, c), c)
        heard[key] = max(heard.get(key, h), h)

    for e in events:
        if e.sender == node and e.answered and started[node] <= e.sent and e.back <= at:
            saw(e.receiver, e.sent, e.back)  # its own ping: sent / answer arrived
        if e.receiver == node and e.arrived and started[node] <= e.there <= at:
            saw(e.sender, None, e.there)  # a peer's ping arrived: heard, not contact
    nodes = frozenset(f"n{i}" for i in range(n))
    return Contacts(f"n{node}", nodes, started[node], contact, heard)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_a_failover_majority_never_sees_an_unfenced_primary(
    history: tuple[int, list[float], list[PingEvent], float, Timing],
) -> None:
    n, started, events, now, timing = history
    primary = 0
    # Every other node that is sure the primary has been gone long enough.
    sure = [
        x for x in range(1, n)
        if (u := unreachable_for(view(x, n, started, events, now), timing, "n0", now)) is not None
        and u > timing.self_fence_after + timing.margin
    ]  # fmt: skip
    if len(sure) < majority(n):
        return
    # Then the primary's own lease was due a margin earlier (unless it had restarted
    # since: a just-started agent fences at once without a majority, see decide_at_start).
    at = now - timing.margin
    if at < started[primary]:
        return
    lease = evaluate(view(primary, n, started, events, at), timing, at)
    assert lease.fence_due, (lease, sure)


# -- agent.toml [failover] ---------------------------------------------------------------


def _agent_toml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'node = "n1"\npool_root = "tank/zflock"\n{extra}')
    return path


def test_self_fence_after_defaults_to_30_s(tmp_path: Path) -> None:
    defaults = load_agent_config(_agent_toml(tmp_path, "")).failover
    assert (defaults.self_fence_after, defaults.stop_holders) == (30.0, True)
    config = load_agent_config(
        _agent_toml(tmp_path, "[failover]\nself_fence_after = 5\nstop_holders = false\n")
    )
    assert (config.failover.self_fence_after, config.failover.stop_holders) == (5.0, False)


def test_the_margin_covers_the_fence_itself() -> None:
    """Where readonly=on is the fence (OpenZFS) the margin covers its zfs set; where a
    held file can still be written until the unmount (zfs-fuse), the failover must also
    wait out the stop hook and the stopping of the holders."""
    openzfs = fence_time(True, stop_hook=60.0, stop_holders=11.0)
    assert openzfs == fence_time(True, 0.0, 0.0) == Timing(30.0).fence_time
    assert fence_time(False, stop_hook=60.0, stop_holders=11.0) == openzfs + 71.0
    slow = Timing(30.0, fence_time(False, 60.0, 11.0))
    assert slow.margin == Timing(30.0).margin + 71.0
    assert (slow.interval, slow.deadline) == (Timing(30.0).interval, Timing(30.0).deadline)


@pytest.mark.parametrize(
    "table, expected",
    [
        ("self_fence_after = 1", "failover.self_fence_after: must be 2-3600 s, got 1"),
        ("self_fence_after = 4000", "failover.self_fence_after: must be 2-3600 s"),
        ('self_fence_after = "30s"', "failover.self_fence_after: expected float, got str"),
        ("self_fence = 30", "failover.self_fence: unknown key"),
        ('stop_holders = "yes"', "failover.stop_holders: expected bool, got str"),
    ],
)
def test_self_fence_after_is_validated(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_agent_config(_agent_toml(tmp_path, f"[failover]\n{table}\n"))
