"""The replication policy: operator input, validation, and its ZFS properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.cluster.config import ConfigError, load_agent_config
from zflock.errors import UsageError
from zflock.replication.policy import (
    MAX_EVERY,
    POLICY_PROPERTIES,
    PROP_EVERY,
    PROP_KEEP,
    PROP_KEEP_REPLICA,
    PROP_REPLICATE_TO,
    DamagedPolicy,
    PolicyDefaults,
    ReplicationPolicy,
    cleared_properties,
    defaults_from_config,
    merge,
    policy_from_input,
    policy_from_properties,
    policy_properties,
    stop,
    validate_policy,
)
from zflock.replication.retention import parse_keep
from zflock.units import format_duration, parse_duration

DEFAULTS = PolicyDefaults()
node_names = st.from_regex(r"[a-z][a-z0-9.-]{0,10}", fullmatch=True)


def ask(to: str, every: str | None = "30s", keep: str | None = None) -> ReplicationPolicy:
    return policy_from_input(to, every, keep, None, primary="node1", defaults=DEFAULTS)


def test_continuous_policy_from_the_command_line() -> None:
    policy = ask("node2,node3", "30s", "last=10")
    assert policy.targets == ("node2", "node3")
    assert policy.every == 30
    assert policy.continuous
    assert policy.keep == parse_keep("last=10")
    assert policy.keep_replica == DEFAULTS.keep_replica


def test_every_without_a_value_takes_the_nodes_default() -> None:
    defaults = PolicyDefaults(every=90)
    assert policy_from_input("node2", "", None, None, "node1", defaults).every == 90


def test_one_sync_has_no_interval() -> None:
    assert not ask("node2", None).continuous


@pytest.mark.parametrize(
    ("to", "every", "keep", "problem"),
    [
        ("node2", "0s", None, "must be positive"),
        ("node2", "0", None, "must be positive"),
        ("node2", "-5s", None, "invalid interval"),
        ("node2", "30d", None, "between 1s and 1w"),
        ("node2", "soon", None, "invalid interval"),
        ("node2,node2", "30s", None, "given twice"),
        ("node1", "30s", None, "cannot be its own replica target"),
        ("node2,node1", None, None, "cannot be its own replica target"),
        ("node2,,node3", "30s", None, "node names separated by commas"),
        ("", "30s", None, "node names separated by commas"),
        ("no de", "30s", None, "invalid node name"),
        ("node2", "30s", "24h", "invalid keep rules"),
        ("node2", "30s", "last=0", "invalid keep rules"),
        (",".join(f"n{i}" for i in range(20)), "30s", None, "at most 16"),
    ],
)
def test_bad_policies_are_one_line_usage_errors(
    to: str, every: str | None, keep: str | None, problem: str
) -> None:
    with pytest.raises(UsageError, match=problem) as caught:
        ask(to, every, keep)
    assert "\n" not in str(caught.value)


def test_merge_adds_targets_and_takes_the_new_interval() -> None:
    merged = merge(ask("node2", "1m"), ask("node3,node2", "30s"), "node1")
    assert merged.targets == ("node2", "node3")
    assert merged.every == 30
    assert merge(None, ask("node2"), "node1") == ask("node2")


def test_merge_validates_the_result() -> None:
    big = ask(",".join(f"n{i}" for i in range(16)))
    with pytest.raises(UsageError, match="at most 16"):
        merge(big, ask("node2"), "node1")


def test_stop_one_target_or_all() -> None:
    policy = ask("node2,node3")
    stopped = stop(policy, ["node2"])
    assert stopped is not None and stopped.targets == ("node3",)
    assert stop(policy) is None
    assert stop(policy, ["node2", "node3"]) is None
    with pytest.raises(UsageError, match="'node4' is not a replication target"):
        stop(policy, ["node4"])


def test_validate_refuses_an_empty_target_list() -> None:
    with pytest.raises(UsageError, match="at least one target"):
        validate_policy(ReplicationPolicy((), 30, DEFAULTS.keep, DEFAULTS.keep), "node1")


# -- ZFS properties -----------------------------------------------------------------

keep_specs = st.sampled_from(
    ["last=1", "1x1h(keep=all) | 24x1h | 14x1d", "10x10m(keep=2) | 6x1h, last=3", "1x1w"]
)
policies = st.builds(
    ReplicationPolicy,
    targets=st.lists(node_names, min_size=1, max_size=16, unique=True).map(tuple),
    every=st.one_of(st.none(), st.integers(1, MAX_EVERY)),
    keep=keep_specs.map(parse_keep),
    keep_replica=keep_specs.map(parse_keep),
)


@given(policies)
def test_properties_round_trip(policy: ReplicationPolicy) -> None:
    props = policy_properties(policy)
    assert set(props) == set(POLICY_PROPERTIES)
    for value in props.values():
        # A valid, bounded ZFS user-property value: printable ASCII, one line.
        assert value is None or (value.isascii() and value.isprintable() and len(value) < 2048)
    assert policy_from_properties(props) == policy


@given(st.integers(1, 10 * MAX_EVERY))
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_no_properties_is_no_policy() -> None:
    assert policy_from_properties({}) is None
    assert policy_from_properties(cleared_properties()) is None
    assert policy_from_properties({"zflock:volume": "v"}) is None


GOOD = policy_properties(ask("node2,node3"))


@pytest.mark.parametrize(
    ("prop", "value", "problem"),
    [
        (PROP_REPLICATE_TO, None, "zflock:replicate-to is missing"),
        (PROP_KEEP, None, "zflock:keep is missing"),
        (PROP_KEEP_REPLICA, None, "zflock:keep-replica is missing"),
        (PROP_REPLICATE_TO, "", "zflock:replicate-to"),
        (PROP_REPLICATE_TO, "node2,,x", "zflock:replicate-to"),
        (PROP_REPLICATE_TO, "node2,node2", "zflock:replicate-to"),
        (PROP_EVERY, "0s", "zflock:every"),
        (PROP_EVERY, "-", "zflock:every"),
        (PROP_KEEP, "forever", "zflock:keep"),
        (PROP_KEEP_REPLICA, "", "zflock:keep-replica"),
    ],
)
def test_a_damaged_policy_is_an_error_never_no_policy(
    prop: str, value: str | None, problem: str
) -> None:
    props = {**GOOD, prop: value}
    with pytest.raises(DamagedPolicy, match=problem) as caught:
        policy_from_properties(props)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("damaged replication policy")


# -- agent.toml defaults -------------------------------------------------------------


def write_config(tmp_path: Path, replication: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'node = "node1"\npool_root = "tank/zflock"\n{replication}')
    return path


def test_defaults_from_agent_toml(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, '[replication]\nevery = "10s"\nkeep = "last=5"\nmax_streams = 4\n'
    )
    config = load_agent_config(path)
    assert config.replication.max_streams == 4
    defaults = defaults_from_config(config)
    assert defaults.every == 10
    assert defaults.keep == parse_keep("last=5")
    assert defaults.keep_replica == DEFAULTS.keep_replica


def test_builtin_defaults(tmp_path: Path) -> None:
    assert defaults_from_config(load_agent_config(write_config(tmp_path, ""))) == DEFAULTS


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('every = "0s"', "replication.every: invalid interval"),
        ('keep = "lots"', "replication.keep: invalid keep rules"),
        ('keep_replica = ""', "replication.keep_replica: invalid keep rules"),
    ],
)
def test_bad_defaults_name_the_file_and_key(tmp_path: Path, table: str, problem: str) -> None:
    config = load_agent_config(write_config(tmp_path, f"[replication]\n{table}\n"))
    with pytest.raises(ConfigError, match=problem) as caught:
        defaults_from_config(config)
    assert str(caught.value).startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ("max_streams = 0", "replication.max_streams: 0 not in 1-64"),
        ("every = 30", "replication.every: expected str"),
        ('evry = "30s"', "replication.evry: unknown key"),
    ],
)
def test_bad_replication_table_fails_at_load(tmp_path: Path, table: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_agent_config(write_config(tmp_path, f"[replication]\n{table}\n"))
