"""State file round trip, generated ssh files, the `up` decision and preflight (no root)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zflock.lab import preflight
from zflock.lab.health import LabHealth, NodeHealth, decide_up
from zflock.lab.plan import UnknownNode, plan_lab
from zflock.lab.procs import ProcessRecord, is_running, process_starttime, record
from zflock.lab.sshd import known_hosts_lines, render_ssh_config, render_sshd_config
from zflock.lab.state import LabState, find_state, load_state, save_state
from zflock.zfs import PoolInfo


def _state(tmp_path: Path) -> LabState:
    state = LabState.from_plan(plan_lab("unit", 2, root=tmp_path))
    state.links += [state.bridge, "zf1-unit"]
    state.netns.append("zfl-unit-node1")
    state.nodes["node1"].processes["zfs-fuse"] = ProcessRecord(pid=10, starttime=20)
    state.nodes["node1"].processes["sshd"] = ProcessRecord(pid=11, starttime=21)
    state.nodes["node1"].net_ns_inode = 4026532000
    state.nodes["node1"].host_key_pub = "ssh-ed25519 AAAAC3Nza zflock"
    return state


def test_state_round_trip_is_atomic_json(tmp_path: Path) -> None:
    state = _state(tmp_path)
    save_state(state)
    assert state.state_file == tmp_path / "unit.json"
    assert [p.name for p in tmp_path.iterdir()] == ["unit.json"]  # no temp file left
    data = json.loads(state.state_file.read_text())
    assert data["nodes"]["node1"]["processes"] == {
        "zfs-fuse": {"pid": 10, "starttime": 20},
        "sshd": {"pid": 11, "starttime": 21},
    }
    assert data["operator_key"] == str(tmp_path / "unit" / "id_ed25519")
    loaded = load_state("unit", root=tmp_path)
    assert loaded.to_json() == state.to_json()
    assert list(loaded.nodes["node1"].processes) == ["zfs-fuse", "sshd"]  # order kept
    assert oct(state.state_file.stat().st_mode & 0o777) == "0o600"


def test_missing_and_unknown(tmp_path: Path) -> None:
    assert find_state("nope", root=tmp_path) is None
    with pytest.raises(Exception, match="lab 'nope' is not up"):
        load_state("nope", root=tmp_path)
    with pytest.raises(UnknownNode, match=r"unknown node 'node9'.*node1, node2"):
        _state(tmp_path).node("node9")


def test_unreadable_state_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Exception, match="unreadable"):
        find_state("bad", root=tmp_path)


def test_sshd_config_is_key_only_on_the_node_address(tmp_path: Path) -> None:
    text = render_sshd_config(
        address="10.77.5.11",
        host_key=tmp_path / "hk",
        authorized_keys=tmp_path / "id.pub",
        pid_file=tmp_path / "pid",
    )
    lines = set(text.splitlines())
    assert "ListenAddress 10.77.5.11:22" in lines
    assert f"AuthorizedKeysFile {tmp_path / 'id.pub'}" in lines
    assert "PasswordAuthentication no" in lines
    assert "StrictModes no" in lines


def test_client_files() -> None:
    kh = known_hosts_lines([("10.77.5.11", "ssh-ed25519 AAAA comment")])
    assert kh == "10.77.5.11 ssh-ed25519 AAAA\n"
    cfg = render_ssh_config(
        nodes=[("node1", "10.77.5.11")], identity=Path("/k"), known_hosts=Path("/kh")
    )
    assert "Host node1 10.77.5.11" in cfg
    assert "StrictHostKeyChecking yes" in cfg
    assert "UserKnownHostsFile /kh" in cfg


def _health(*, alive: bool = True, nodes: int = 3, complete: bool = True) -> LabHealth:
    return LabHealth(
        name="x",
        complete=complete,
        bridge_present=True,
        nodes=tuple(
            NodeHealth(
                name=f"node{i}",
                netns=f"zfl-x-node{i}",
                address=f"10.77.1.{10 + i}",
                netns_present=True,
                processes={"zfs-fuse": True, "sshd": alive or i != 2},
                pids={"zfs-fuse": 100 + i, "sshd": 200 + i},
                pool=PoolInfo(name="tank", size=1, allocated=0, free=1, health="ONLINE"),
            )
            for i in range(1, nodes + 1)
        ),
    )


def test_decide_up() -> None:
    assert decide_up(_health(), 3) == "reuse"
    assert decide_up(_health(), 2) == "resize"
    assert decide_up(_health(alive=False), 3) == "broken"
    assert decide_up(_health(complete=False), 3) == "broken"
    assert _health(alive=False).problems == ["node2: sshd (pid 202) is not running"]


def test_preflight_lines() -> None:
    assert preflight.check_root(euid=1000) is not None
    assert "root" in (preflight.check_root(euid=1000) or "")
    assert preflight.check_root(euid=0) is None
    missing = preflight.check_programs(lambda name: None if name == "zfs-fuse" else "/bin/x")
    assert missing == (
        "zflock lab needs `zfs-fuse`, which is not installed (apt-get install zfs-fuse)"
    )
    assert preflight.check_programs(lambda name: "/bin/x") is None
    assert "/nonexistent/fuse is missing" in (preflight.check_fuse(Path("/nonexistent/fuse")) or "")


def test_process_records_tell_recycled_pids_apart() -> None:
    me = record(os.getpid())
    assert is_running(me)
    assert process_starttime(os.getpid()) == me.starttime
    assert not is_running(ProcessRecord(pid=os.getpid(), starttime=me.starttime + 1))


def test_public_api_resolves_and_never_shadows_a_submodule() -> None:
    import pkgutil

    import zflock.lab as lab

    submodules = {m.name for m in pkgutil.iter_modules(lab.__path__)}
    assert not submodules & set(lab.__all__)  # `lab.up` must stay the function
    for name in lab.__all__:
        assert getattr(lab, name) is not None
    assert callable(lab.up) and callable(lab.down) and callable(lab.node_prefix)
