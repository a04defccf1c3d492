"""The scheduler's decisions: timing with jitter, backoff, limits, and the direction switch."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zflock.replication.policy import PolicyDefaults, ReplicationPolicy
from zflock.replication.schedule import (
    Backoff,
    Link,
    Timing,
    after_move,
    after_run,
    first_run,
    next_wakeup,
    pick,
    reconcile,
    started,
)

DEFAULTS = PolicyDefaults()


def policy(*targets: str, every: int | None = 30) -> ReplicationPolicy:
    return ReplicationPolicy(targets, every, DEFAULTS.keep, DEFAULTS.keep_replica)


# -- backoff ------------------------------------------------------------------------

backoffs = st.builds(
    Backoff,
    first=st.floats(1, 600),
    factor=st.floats(1, 10),
    ceiling=st.floats(600, 86400),
)


@given(backoffs, st.integers(1, 10_000))
def test_backoff_is_monotone_capped_and_never_a_hot_loop(backoff: Backoff, failures: int) -> None:
    delay = backoff.delay(failures)
    assert backoff.first <= delay <= backoff.ceiling
    assert backoff.delay(failures + 1) >= delay


def test_backoff_doubles_to_thirty_minutes() -> None:
    delays = [Backoff().delay(n) for n in range(1, 12)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800, 1800]


@pytest.mark.parametrize(
    "kwargs", [{"first": 0}, {"first": 0.5}, {"factor": 0.5}, {"first": 100, "ceiling": 10}]
)
def test_unusable_backoff_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="unusable backoff"):
        Backoff(**kwargs)


@settings(max_examples=50)
@given(st.integers(0, 2**32), st.floats(1, 3600), st.lists(st.floats(0, 600), max_size=30))
def test_retries_back_off_monotonically_within_the_cap(
    seed: int, every: float, durations: list[float]
) -> None:
    """A link that fails every time: each wait is >= min_gap, capped, never shorter."""
    rng = random.Random(seed)
    timing = Timing()
    link = first_run("v", "node2", every, 0.0, rng)
    now = link.next_run
    previous_wait = 0.0
    for duration in durations:
        link = after_run(started(link), now, now + duration, "node2 unreachable", rng, timing)
        wait = link.next_run - (now + duration)
        assert timing.min_gap - 1e-6 <= wait <= timing.backoff.ceiling + 1e-6  # float sums
        # Jitter (at most +10%) may not undo the doubling: the base grows 2x.
        capped = wait >= timing.backoff.ceiling - 1e-6
        assert wait >= previous_wait / (1 + timing.jitter) or capped
        previous_wait = wait
        now = link.next_run


@settings(max_examples=50)
@given(st.integers(0, 2**32), st.integers(1, 3600), st.floats(0, 7200))
def test_a_success_runs_again_one_interval_after_it_started(
    seed: int, every: int, duration: float
) -> None:
    rng = random.Random(seed)
    timing = Timing()
    link = replace(first_run("v", "node2", every, 0.0, rng), failures=3, last_error="x")
    done = after_run(started(link), 100.0, 100.0 + duration, None, rng, timing)
    assert done.failures == 0 and done.last_error is None and not done.running
    assert done.last_success == 100.0 + duration
    assert done.next_run >= 100.0 + duration + timing.min_gap  # never a hot loop
    assert done.next_run <= max(100.0 + every * 1.05, 100.0 + duration + timing.min_gap)
    assert done.next_run >= min(100.0 + every * 0.95, done.next_run)


def test_first_runs_are_spread_over_one_interval() -> None:
    rng = random.Random(7)
    starts = [first_run(f"v{i}", "node2", 30, 1000.0, rng).next_run for i in range(300)]
    assert all(1000.0 <= s < 1030.0 for s in starts)
    assert len({int(s) for s in starts}) == 30  # every second of the interval is used


# -- which due links start ------------------------------------------------------------


@st.composite
def link_sets(draw: st.DrawFn) -> list[Link]:
    volumes = draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True))
    links = []
    for volume in volumes:
        targets = draw(st.lists(st.sampled_from(["n2", "n3", "n4"]), min_size=1, unique=True))
        for target in targets:
            links.append(Link(volume, target, 30.0, next_run=draw(st.floats(0, 100))))
    return links


@given(link_sets(), st.integers(1, 6), st.integers(0, 2**32), st.floats(0, 300))
def test_limits_hold_over_a_simulated_loop(
    links: list[Link], limit: int, seed: int, horizon: float
) -> None:
    """Drive the decisions like the agent's loop: the limits hold at every instant."""
    rng = random.Random(seed)
    state = {link.key: link for link in links}
    running: dict[tuple[str, str], float] = {}  # key -> finish time
    now = 0.0
    while now <= horizon:
        for key in pick(state.values(), now, limit):
            assert key not in running  # one job per (volume, replica)
            state[key] = started(state[key])
            running[key] = now + rng.uniform(0, 40)
        busy = [key for key, link in state.items() if link.running]
        assert len(busy) <= limit
        assert len({volume for volume, _ in busy}) == len(busy)  # one per volume
        # Nothing due and free stays waiting while a stream slot is free.
        if len(busy) < limit:
            waiting = [
                link
                for link in state.values()
                if not link.running
                and link.next_run <= now
                and link.volume not in {v for v, _ in busy}
            ]
            assert waiting == []
        # Advance to the next event: a run finishing, or a link falling due.
        wake = next_wakeup(state.values())
        candidates = [t for t in running.values()] + ([wake] if wake and wake > now else [])
        now = min(candidates, default=horizon + 1)
        for key, finish in list(running.items()):
            if finish <= now:
                error = "boom" if rng.random() < 0.3 else None
                state[key] = after_run(state[key], finish - 1, finish, error, rng)
                del running[key]


def test_pick_prefers_the_most_overdue() -> None:
    links = [
        Link("a", "n2", 30, next_run=5),
        Link("b", "n2", 30, next_run=1),
        Link("c", "n2", 30, next_run=3),
        Link("d", "n2", 30, next_run=50),  # not due
    ]
    assert pick(links, now=10, limit=2) == (("b", "n2"), ("c", "n2"))
    assert pick([started(links[1]), *links[2:]], now=10, limit=2) == (("c", "n2"),)


def test_one_running_link_per_volume() -> None:
    links = [Link("a", "n2", 30, next_run=1), Link("a", "n3", 30, next_run=2)]
    assert pick(links, now=10, limit=5) == (("a", "n2"),)
    assert pick([started(links[0]), links[1]], now=10, limit=5) == ()


# -- reconcile and the direction switch -------------------------------------------------


def test_reconcile_keeps_state_adds_and_drops_targets() -> None:
    rng = random.Random(1)
    old = [
        Link("v", "n2", 30, next_run=500, failures=2, last_error="x"),
        Link("v", "n3", 30, next_run=40),
    ]
    links = reconcile("v", old, policy("n2", "n4"), now=100, rng=rng)
    assert [link.target for link in links] == ["n2", "n4"]
    assert links[0] == old[0]  # its backoff survives a re-read of the policy
    assert 100 <= links[1].next_run < 130


def test_reconcile_a_shorter_interval_brings_the_next_run_forward() -> None:
    link = Link("v", "n2", 3600, next_run=3000)
    (shorter,) = reconcile("v", [link], policy("n2", every=10), now=100, rng=random.Random(1))
    assert shorter.every == 10 and shorter.next_run == 110


def test_reconcile_without_a_continuous_policy_has_no_links() -> None:
    link = Link("v", "n2", 30, next_run=0)
    assert reconcile("v", [link], None, 0, random.Random(1)) == ()
    assert reconcile("v", [link], policy("n2", every=None), 0, random.Random(1)) == ()


def test_moving_to_a_target_switches_the_direction() -> None:
    assert after_move(policy("n2", "n3"), "n1", "n2").targets == ("n1", "n3")
    assert after_move(policy("n3", "n2"), "n1", "n2").targets == ("n3", "n1")


def test_moving_elsewhere_keeps_the_targets() -> None:
    before = policy("n2", "n3")
    assert after_move(before, "n1", "n4") == before
    assert after_move(before, "n1", "n1") == before


@given(
    st.lists(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), min_size=1, unique=True),
    st.sampled_from(["n1", "n2", "n3", "n4", "n5"]),
    st.sampled_from(["n1", "n2", "n3", "n4", "n5"]),
)
def test_direction_switch_properties(targets: list[str], old: str, new: str) -> None:
    if old in targets:  # a valid policy never lists its primary
        return
    before = policy(*targets)
    after = after_move(before, old, new)
    assert new not in after.targets or new == old or new not in targets
    assert len(after.targets) == len(before.targets)  # the replica count stays
    assert len(set(after.targets)) == len(after.targets)
    if new in targets and new != old:
        assert old in after.targets
        assert after_move(after, new, old) == before  # moving back restores it
