"""The Docker plugin's pure decisions (no Docker, no ZFS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.docker.model import (
    CreateOptions,
    DockerError,
    caller_id,
    format_holders,
    in_use_error,
    locate,
    parse_holders,
    parse_options,
    status,
    volume_name,
    with_holder,
    without_holder,
)
from zflock.cluster.config import ConfigError, load_agent_config
from zflock.rpc.messages import VolumeInfo

ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=64)


def copy(
    node: str, role: str = "primary", epoch: int = 1, vid: str = "id-1", **kw: object
) -> VolumeInfo:
    fields: dict[str, object] = dict(
        name="shop", node=node, id=vid, role=role, epoch=epoch, origin="node1",
        mountpoint="/zflock/shop", mounted=role == "primary", readonly=role != "primary",
        used=0, referenced=0, quota=None, snapshots=1, latest_snapshot="s",
        latest_snapshot_time=100,
    )  # fmt: skip
    fields.update(kw)
    return VolumeInfo(**fields)  # type: ignore[arg-type]


@given(st.lists(ids, unique=True, max_size=20))
def test_holders_round_trip_through_the_property(holders: list[str]) -> None:
    assert parse_holders(format_holders(holders, "node1"), "node1") == holders


@given(st.lists(ids, unique=True, max_size=10), st.lists(ids, unique=True, max_size=10))
def test_another_nodes_holders_never_count_here(ours: list[str], theirs: list[str]) -> None:
    value = ",".join(filter(None, [format_holders(theirs, "node2"), format_holders(ours, "node1")]))
    assert parse_holders(value, "node1") == ours


@given(st.lists(ids, unique=True, max_size=10), ids)
def test_a_repeated_mount_counts_once_and_one_unmount_releases_it(
    holders: list[str], ident: str
) -> None:
    once = with_holder(holders, ident)
    assert with_holder(once, ident) == once
    assert ident not in without_holder(once, ident)
    assert set(without_holder(once, ident)) == set(holders) - {ident}


def test_unset_property_means_no_holder() -> None:
    assert parse_holders(None, "node1") == [] and parse_holders("", "node1") == []


@pytest.mark.parametrize("bad", ["", "a,b", "a/b", "x" * 129, "é", 7, None])
def test_malformed_mount_ids_are_refused(bad: object) -> None:
    with pytest.raises(DockerError):
        caller_id(bad)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "-x", "a b", None, 3, "v" * 300])
def test_invalid_volume_names_are_refused(bad: object) -> None:
    with pytest.raises(DockerError):
        volume_name(bad)


def test_options() -> None:
    assert parse_options(None, "node1") == CreateOptions()
    got = parse_options({"size": "1G", "replicas": "node2, node3", "every": "30s"}, "node1")
    assert got == CreateOptions(quota=1 << 30, replicas=("node2", "node3"), every="30s")


@pytest.mark.parametrize(
    ("opts", "error"),
    [
        ({"colour": "red"}, "unknown option 'colour'"),
        ({"size": "lots"}, "invalid size"),
        ({"size": 5}, "must be strings"),
        ({"replicas": "node1"}, "node1 will hold the primary"),
        ({"replicas": "node2,node2"}, "named twice"),
        ({"replicas": "no de"}, "invalid node name"),
        ({"every": "30s"}, "every needs replicas"),
        ({"replicas": "node2", "every": "soon"}, "invalid interval 'soon'"),
        ({"replicas": "node2", "every": "0s"}, "invalid interval"),
        ("size=1G", "object of strings"),
    ],
)
def test_bad_options_are_one_line_errors(opts: object, error: str) -> None:
    with pytest.raises(DockerError, match=error) as exc:
        parse_options(opts, "node1")
    assert "\n" not in str(exc.value)


def test_the_primary_is_the_primary_copy_at_the_highest_epoch() -> None:
    found = locate([copy("node1", epoch=1), copy("node2", epoch=2), copy("node3", "replica", 2)])
    where = found["shop"]
    assert where.primary == "node2" and where.epoch == 2 and where.copies[0].node == "node2"
    assert status(where, ["m1"]) == {
        "primary": "node2",
        "epoch": 2,
        "replicas": [
            {"node": "node1", "epoch": 1, "snapshot": "s", "lag_s": 0.0},
            {"node": "node3", "epoch": 2, "snapshot": "s", "lag_s": 0.0},
        ],
        "mounts_here": 1,
        "problems": ["stale primary at a lower epoch on node1"],
    }


def test_no_primary_when_unclear() -> None:
    two = locate([copy("node1"), copy("node2")])["shop"]
    assert two.primary is None and "more than one primary" in two.problems[0]
    none = locate([copy("node1", "replica")])["shop"]
    assert none.primary is None and none.problems == ["no reachable primary"]
    twins = locate([copy("node1"), copy("node2", vid="id-2")])["shop"]
    assert twins.primary is None and "two different volumes" in twins.problems[0]


def test_replica_lag_is_behind_the_primarys_newest_snapshot() -> None:
    where = locate(
        [
            copy("node1", latest_snapshot_time=130),
            copy("node2", "replica", latest_snapshot_time=100),
        ]
    )
    assert status(where["shop"], [])["replicas"][0]["lag_s"] == 30.0


def test_in_use_names_the_node_and_the_container() -> None:
    message = str(in_use_error("shop", "node2", ["a" * 64]))
    assert message == (
        "volume shop is in use on node node2 by container mount aaaaaaaaaaaa; "
        "stop that container first"
    )


def _agent_toml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'node = "node1"\npool_root = "tank/zflock"\n{extra}\n')
    return path


def test_plugin_settings_in_agent_toml(tmp_path: Path) -> None:
    default = load_agent_config(_agent_toml(tmp_path, ""))
    assert default.docker_plugin and default.docker_mount_timeout == 20.0
    assert default.docker_socket == Path("/run/docker/plugins/zflock.sock")
    custom = load_agent_config(
        _agent_toml(tmp_path, 'docker_plugin = false\ndocker_socket = "p/z.sock"\n'
                    "docker_mount_timeout = 3")
    )  # fmt: skip
    assert not custom.docker_plugin and custom.docker_mount_timeout == 3.0
    assert custom.docker_socket == tmp_path / "p/z.sock"


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ("docker_mount_timeout = 30", "docker_mount_timeout: must be 1-25 s"),
        ("docker_mount_timeout = 0", "docker_mount_timeout: must be 1-25 s"),
        ('docker_plugin = "yes"', "docker_plugin: expected bool"),
        ("docker_socket = 5", "docker_socket: expected str"),
    ],
)
def test_bad_plugin_settings_name_the_key(tmp_path: Path, extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_agent_config(_agent_toml(tmp_path, extra))
