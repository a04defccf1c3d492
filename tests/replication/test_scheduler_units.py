"""The scheduler's newer pure rules: a busy volume deferred, a replica's lag and
state, and the policy a move or failover carries to the new primary."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zflock.replication.policy import (
    POLICY_PROPERTIES,
    PROP_EVERY,
    PROP_KEEP,
    PROP_KEEP_REPLICA,
    PROP_POLICY_SERIAL,
    PROP_REPLICATE_TO,
    policy_from_properties,
)
from zflock.replication.schedule import (
    Link,
    deferred,
    lag_state,
    policy_after_move,
    replica_lag,
)

RULES = "1x1h(keep=all) | 24x1h | 14x1d"


def props(to: str, every: str | None = "30s") -> dict[str, str | None]:
    return {
        PROP_REPLICATE_TO: to,
        PROP_EVERY: every,
        PROP_KEEP: RULES,
        PROP_KEEP_REPLICA: "last=5",
    }


def test_deferred_is_not_a_failure_and_never_immediate() -> None:
    link = Link("v", "node2", 30.0, next_run=5.0, running=True, failures=2, last_error="x")
    later = deferred(link, now=10.0, delay=0.0)
    assert not later.running
    assert later.next_run >= 11.0  # at least the minimal gap: no hot loop
    assert (later.failures, later.last_error) == (2, "x")  # a busy volume counts nothing


def test_lag_is_the_replicas_data_age_under_a_schedule() -> None:
    assert replica_lag(100.0, 90.0, 95.0, continuous=True) == 10.0
    assert replica_lag(100.0, None, 95.0, continuous=True) is None
    # Without a schedule, against the primary's newest snapshot.
    assert replica_lag(100.0, 95.0, 95.0, continuous=False) == 0.0
    assert replica_lag(100.0, 90.0, 95.0, continuous=False) == 5.0


def test_states() -> None:
    assert lag_state(5.0, 10.0, failures=0) == "ok"
    assert lag_state(20.0, 10.0, failures=0) == "ok"
    assert lag_state(21.0, 10.0, failures=0) == "behind"
    assert lag_state(1.0, 10.0, failures=1) == "failing"
    assert lag_state(None, 10.0, failures=0) == "behind"
    assert lag_state(0.0, None, failures=0) == "ok"
    assert lag_state(3.0, None, failures=0) == "behind"


@given(
    now=st.floats(0, 1e9),
    replica=st.none() | st.floats(0, 1e9),
    primary=st.none() | st.floats(0, 1e9),
    continuous=st.booleans(),
    failures=st.integers(0, 5),
)
def test_lag_never_negative_and_failing_wins(
    now: float, replica: float | None, primary: float | None, continuous: bool, failures: int
) -> None:
    lag = replica_lag(now, replica, primary, continuous)
    assert lag is None or lag >= 0
    state = lag_state(lag, 10.0 if continuous else None, failures)
    assert (state == "failing") == (failures > 0)


def test_a_move_to_a_target_switches_the_direction() -> None:
    moved = policy_after_move(props("node2,node3"), "node1", "node2")
    assert moved[PROP_REPLICATE_TO] == "node1,node3"
    assert moved[PROP_EVERY] == "30s"
    assert moved[PROP_KEEP] == RULES and moved[PROP_KEEP_REPLICA] == "last=5"
    # Moving back switches it back: two moves end where they started (the serial
    # counts both changes).
    assert moved[PROP_POLICY_SERIAL] == "1"
    assert policy_after_move(moved, "node2", "node1") == {
        **props("node2,node3"),
        PROP_POLICY_SERIAL: "2",
    }


def test_no_policy_clears_a_leftover_and_damage_travels_as_it_is() -> None:
    assert policy_after_move({PROP_POLICY_SERIAL: "4"}, "node1", "node2") == {
        **dict.fromkeys(POLICY_PROPERTIES),
        PROP_POLICY_SERIAL: "5",
    }
    damaged = {PROP_REPLICATE_TO: "node2"}
    assert policy_after_move(damaged, "node1", "node2") == {
        **dict.fromkeys(POLICY_PROPERTIES),
        **damaged,
        PROP_POLICY_SERIAL: "1",
    }


def test_one_sync_policy_moves_without_an_interval() -> None:
    moved = policy_after_move(props("node2", every=None), "node1", "node2")
    assert moved[PROP_EVERY] is None and moved[PROP_REPLICATE_TO] == "node1"


NODES = [f"node{i}" for i in range(1, 6)]


@given(
    targets=st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True),
    old=st.sampled_from(NODES),
    new=st.sampled_from(NODES),
)
def test_after_a_move_the_new_primary_is_never_its_own_target(
    targets: list[str], old: str, new: str
) -> None:
    if old in targets:  # the primary is never one of its targets
        return
    moved = policy_from_properties(policy_after_move(props(",".join(targets)), old, new))
    assert moved is not None
    if old != new:
        assert new not in moved.targets
        assert len(moved.targets) == len(targets)
        # The old primary keeps a replica exactly when the new one was a target.
        assert (old in moved.targets) == (new in targets)
