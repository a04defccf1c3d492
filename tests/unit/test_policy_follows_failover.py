"""The replication policy follows a failover (docs/failover.md, "The replication policy
follows"): the serial, a replica's copy of its primary's policy, and the pure choice of
the copy a failover adopts (zflock.replication.schedule.policy_after_failover)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.failover import carried_policy
from zflock.agent.policies import policy_sent
from zflock.cli.rejoin import keep_command
from zflock.replication.policy import (
    COPY_REFRESH_SECONDS,
    PROP_EVERY,
    PROP_KEEP,
    PROP_KEEP_REPLICA,
    PROP_POLICY_SERIAL,
    PROP_REPLICATE_TO,
    DamagedPolicy,
    PolicyCopy,
    copy_from_value,
    copy_needs_storing,
    copy_value,
    policy_from_properties,
    policy_serial,
)
from zflock.replication.schedule import StoredPolicy, policy_after_failover, policy_after_move
from zflock.rpc import messages as m

NODES = ("node1", "node2", "node3", "node4", "node5")


def props(to: str, every: str | None = "10s") -> dict[str, str]:
    values = {PROP_REPLICATE_TO: to, PROP_KEEP: "last=10", PROP_KEEP_REPLICA: "last=5"}
    return values if every is None else {**values, PROP_EVERY: every}


# -- the copy's stored form ---------------------------------------------------------


def test_a_copy_reads_back_as_it_was_stored() -> None:
    copy = PolicyCopy(7, "node1", 1700000000.5, props("node2,node3"))
    value = copy_value(copy)
    assert "\t" not in value and "\n" not in value and len(value) < 400
    assert copy_from_value(value) == copy
    none = PolicyCopy(8, "node1", 1700000001.0, {})
    assert copy_from_value(copy_value(none)) == none


@pytest.mark.parametrize(
    "value",
    [
        "",
        "7",
        "{}",
        '{"serial":-1,"from":"node1","at":1,"policy":{}}',
        '{"serial":"7","from":"node1","at":1,"policy":{}}',
        '{"serial":7,"from":"node1","at":1,"policy":{"zflock:volume":"x"}}',
        '{"serial":7,"from":"node1","at":1,"policy":[]}',
    ],
)
def test_a_damaged_copy_is_an_error_never_no_policy(value: str) -> None:
    with pytest.raises(DamagedPolicy, match="damaged policy copy"):
        copy_from_value(value)


@given(
    serial=st.integers(0, 2**40),
    sender=st.sampled_from(NODES),
    at=st.floats(0, 2e9),
    targets=st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True),
    every=st.sampled_from([None, "10s", "1h30m"]),
)
def test_any_copy_round_trips(
    serial: int, sender: str, at: float, targets: list[str], every: str | None
) -> None:
    copy = PolicyCopy(serial, sender, round(at, 3), props(",".join(targets), every))
    assert copy_from_value(copy_value(copy)) == copy


def test_serials_read_safely() -> None:
    assert [policy_serial(v) for v in (None, "", "0", "5", "-3", "x")] == [0, 0, 0, 5, 0, 0]


def test_a_primary_sends_its_policy_and_serial() -> None:
    sent = policy_sent({**props("node2"), PROP_POLICY_SERIAL: "4", PROP_EVERY: None})
    assert (sent.serial, sent.policy) == (4, props("node2", every=None))
    assert abs(sent.sent_at - time.time()) < 60
    assert policy_sent({}).serial == 0 and policy_sent({}).policy == {}


def test_a_move_raises_the_serial() -> None:
    moved = policy_after_move({**props("node2,node3"), PROP_POLICY_SERIAL: "6"}, "node1", "node2")
    assert moved[PROP_POLICY_SERIAL] == "7" and moved[PROP_REPLICATE_TO] == "node1,node3"


# -- the choice a failover makes ------------------------------------------------------


def test_the_highest_serial_wins_and_loses_the_new_primary() -> None:
    stored = [
        StoredPolicy("node2", 4, props("node2,node3"), "node1", 100.0),
        StoredPolicy("node3", 5, props("node2,node3,node4"), "node1", 110.0),
    ]
    adopted = policy_after_failover(stored, "node2")
    assert adopted.source == stored[1]
    assert adopted.policy is not None and adopted.policy.targets == ("node3", "node4")
    assert adopted.properties[PROP_REPLICATE_TO] == "node3,node4"
    assert adopted.properties[PROP_POLICY_SERIAL] == "5"  # the promotion stores 6
    assert policy_after_move(adopted.properties, "node1", "node2")[PROP_POLICY_SERIAL] == "6"


def test_a_newer_stop_wins_over_an_older_policy() -> None:
    stored = [
        StoredPolicy("node2", 4, props("node2,node3"), "node1"),
        StoredPolicy("node3", 5, {}, "node1"),  # told of the --stop
    ]
    adopted = policy_after_failover(stored, "node2")
    assert adopted.policy is None and adopted.source == stored[1]
    assert adopted.properties == {PROP_POLICY_SERIAL: "5"}


def test_the_only_target_promoted_leaves_no_policy() -> None:
    adopted = policy_after_failover([StoredPolicy("node2", 3, props("node2"), "node1")], "node2")
    assert adopted.policy is None and adopted.properties == {PROP_POLICY_SERIAL: "3"}


def test_nothing_stored_anywhere_is_no_policy() -> None:
    adopted = policy_after_failover([], "node2")
    assert (adopted.policy, adopted.source, adopted.properties) == (None, None, {})


stored_policies = st.lists(
    st.builds(
        StoredPolicy,
        node=st.sampled_from(NODES),
        serial=st.integers(0, 20),
        properties=st.one_of(
            st.just({}),
            st.lists(st.sampled_from(NODES), min_size=1, max_size=4, unique=True).map(
                lambda t: props(",".join(t))
            ),
        ),
        sender=st.one_of(st.none(), st.sampled_from(NODES)),
    ),
    max_size=6,
)


@given(stored=stored_policies, new=st.sampled_from(NODES))
def test_the_adopted_policy_is_the_newest_and_never_targets_the_new_primary(
    stored: list[StoredPolicy], new: str
) -> None:
    adopted = policy_after_failover(stored, new)
    final = policy_from_properties(policy_after_move(adopted.properties, "node1", new))
    # Never its own target, and the targets are what the newest copy listed, less it.
    if final is not None:
        assert new not in final.targets
        assert adopted.source is not None
        before = policy_from_properties(adopted.source.properties)
        assert before is not None and set(final.targets) <= set(before.targets)
    if not stored:
        assert adopted.source is None and final is None
        return
    # Never older than any answering copy; the new primary stores a higher serial.
    assert adopted.source is not None
    assert all(adopted.source.serial >= s.serial for s in stored)
    stored_serial = int(policy_after_move(adopted.properties, "node1", new)[PROP_POLICY_SERIAL])
    assert all(stored_serial > s.serial for s in stored)
    # No policy stays no policy.
    if not adopted.source.properties:
        assert final is None


# -- the agent's side: what the answering copies hold --------------------------------


def info(node: str, **kw: object) -> m.VolumeInfo:
    base: dict[str, object] = dict(
        name="web", node=node, id="id-a", role="replica", epoch=2, origin="node1",
        mountpoint="/m", mounted=False, readonly=True, used=0, referenced=0, quota=None,
        snapshots=1, latest_snapshot="s", latest_snapshot_time=1,
    )  # fmt: skip
    return m.VolumeInfo(**{**base, **kw})  # type: ignore[arg-type]


def copy_of(serial: int, to: str | None, at: float | None = None) -> str:
    policy = props(to) if to else {}
    return copy_value(PolicyCopy(serial, "node1", time.time() if at is None else at, policy))


def test_the_failover_adopts_the_newest_copy_and_names_it() -> None:
    copies = [
        info("node2", policy_copy=copy_of(3, "node2,node3")),
        info("node3", policy_copy=copy_of(4, "node2,node3,node4")),
    ]
    carried = carried_policy(copies, ["node1"], "node2")
    assert carried.report is not None and carried.report.targets == ["node3", "node4"]
    assert (carried.source, carried.serial, carried.old_primary) == ("node3", 5, "node1")
    assert carried.properties[PROP_POLICY_SERIAL] == "4"
    assert carried.warnings == []  # only the old primary could not be asked


def test_the_failover_warns_of_nodes_not_asked_and_of_damage() -> None:
    copies = [
        info("node2", policy_copy=copy_of(3, "node2,node3")),
        info("node3", policy_copy="{broken"),
    ]
    carried = carried_policy(copies, ["node1", "node4"], "node2")
    assert carried.report is not None and carried.report.targets == ["node3"]
    text = " ".join(carried.warnings)
    assert "the policy copy on node3 is unreadable" in text
    assert "could not ask node4" in text and "a newer one may be there" in text


def test_no_copy_anywhere_says_so() -> None:
    carried = carried_policy([info("node2"), info("node3")], ["node1"], "node2")
    assert carried.report is None and carried.source is None and carried.properties == {}
    assert any("no replication policy on any reachable copy" in w for w in carried.warnings)


def test_a_copy_not_refreshed_for_many_intervals_is_warned_of() -> None:
    old = time.time() - 3600  # every 10s, last refreshed an hour ago: perhaps dropped
    carried = carried_policy([info("node2", policy_copy=copy_of(3, "node3", at=old))],
                             ["node1"], "node2")  # fmt: skip
    assert any("was last refreshed" in w and "--stop" in w for w in carried.warnings)


def test_a_leftover_of_a_former_primary_counts_at_its_serial() -> None:
    leftover = m.PolicyInfo(volume="web", node="node3", targets=["node1", "node2"],
                            every="10s", keep="last=10", keep_replica="last=5")  # fmt: skip
    copies = [
        info("node2", policy_copy=copy_of(2, "node2,node3")),
        info("node3", policy=leftover, policy_serial=5),
    ]
    carried = carried_policy(copies, ["node4"], "node2")
    assert carried.report is not None and carried.report.targets == ["node1"]
    assert carried.source == "node3"


# -- rejoin prints, never changes, the policy ------------------------------------------


def test_rejoin_prints_the_command_that_would_keep_the_node() -> None:
    policy = m.PolicyInfo(volume="web", node="node2", targets=["node3"], every="10s",
                          keep="last=10")  # fmt: skip
    primary = info("node2", role="primary", policy=policy)
    assert keep_command("web", "node1", primary) == "zflock replicate web --to node1 --every 10s"
    assert keep_command("web", "node3", primary) is None  # already a target
    assert keep_command("web", "node1", info("node2", role="primary")) == (
        "zflock replicate web --to node1 --every INTERVAL"
    )


# -- the replica rewrites its copy only when it changed or is a minute old -------------


def test_a_copy_is_rewritten_when_it_changed_or_grew_old() -> None:
    stored = PolicyCopy(3, "node1", 1000.0, {"zflock:every": "30", "zflock:replicate-to": "n2"})
    value = copy_value(stored)
    same_later = PolicyCopy(3, "node1", 1000.0 + 59, dict(stored.properties))
    assert not copy_needs_storing(value, same_later)  # most runs: no `zfs set`
    assert copy_needs_storing(value, replace(same_later, sent_at=1000.0 + 60))
    assert copy_needs_storing(value, replace(same_later, sent_at=999.0))  # clock went back
    assert copy_needs_storing(value, replace(same_later, serial=4))
    assert copy_needs_storing(value, replace(same_later, sender="node3"))
    assert copy_needs_storing(value, replace(same_later, properties={}))  # --stop
    assert copy_needs_storing(None, same_later)
    assert copy_needs_storing("{not json", same_later)


@given(st.integers(0, 5), st.sampled_from(["node1", "node2"]), st.floats(0, 500))
def test_a_copy_not_rewritten_is_never_older_than_failover_tolerates(
    serial: int, sender: str, later: float
) -> None:
    """What is not rewritten is at most COPY_REFRESH_SECONDS older than what was sent,
    inside failover's 3 intervals + 60 s for any interval."""
    stored = PolicyCopy(serial, sender, 1000.0, {"zflock:every": "10"})
    new = replace(stored, sent_at=1000.0 + later)
    if not copy_needs_storing(copy_value(stored), new):
        assert new.sent_at - stored.sent_at < COPY_REFRESH_SECONDS <= 60
