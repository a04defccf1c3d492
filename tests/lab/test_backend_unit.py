"""The lab's ZFS backends (zfs-fuse daemons, or kernel ZFS with holders): pure parts (no root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zflock.errors import UsageError
from zflock.lab import preflight
from zflock.lab.backend import BACKEND_ENV, lab_backend, node_pool_name
from zflock.lab.health import NodeHealth
from zflock.lab.plan import plan_lab
from zflock.lab.procs import ProcessRecord
from zflock.lab.state import LabState, load_state, save_state


def test_backend_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert lab_backend() == "fuse"
    monkeypatch.setenv(BACKEND_ENV, "native")
    assert lab_backend() == "native"
    assert lab_backend("fuse") == "fuse"
    monkeypatch.setenv(BACKEND_ENV, "kernel")
    with pytest.raises(UsageError, match="invalid lab ZFS backend 'kernel'"):
        lab_backend()


def test_pool_names_are_unique_per_node_only_on_kernel_zfs() -> None:
    assert node_pool_name("fuse", "t1a", 2) == "tank"
    assert node_pool_name("native", "t1a", 2) == "zlt1an2"
    # Not "c1..n1": ZFS refuses pool names that look like disks (c[0-9]...).
    assert node_pool_name("native", "c1x", 1) == "zlc1xn1"
    assert node_pool_name("native", "t1a", 1) != node_pool_name("native", "t1b", 1)


def test_native_state_round_trip_and_per_node_pools(tmp_path: Path) -> None:
    state = LabState.from_plan(plan_lab("unit", 2, root=tmp_path), "native")
    node1 = state.nodes["node1"]
    assert (node1.pool, node1.pool_root) == ("zlunitn1", "zlunitn1/zflock")
    assert state.nodes["node2"].pool_root == "zlunitn2/zflock"
    assert node1.namespace_role == "holder"
    node1.processes["holder"] = ProcessRecord(pid=10, starttime=20)
    assert node1.zfs_fuse_pid == 10
    save_state(state)
    data = json.loads(state.state_file.read_text())
    assert data["backend"] == "native" and data["nodes"]["node2"]["pool"] == "zlunitn2"
    assert load_state("unit", root=tmp_path).to_json() == state.to_json()


def test_old_state_files_read_as_zfs_fuse(tmp_path: Path) -> None:
    state = LabState.from_plan(plan_lab("old", 1, root=tmp_path))
    data = state.to_json()
    del data["backend"]
    for node in data["nodes"].values():
        del node["backend"], node["pool"]
    loaded = LabState.from_json(data)
    assert loaded.backend == "fuse"
    node1 = loaded.nodes["node1"]
    assert (node1.pool, node1.pool_root, node1.namespace_role) == (
        "tank",
        "tank/zflock",
        "zfs-fuse",
    )


def test_health_expects_the_backends_namespace_owner() -> None:
    health = NodeHealth(
        name="node1",
        netns="n",
        address="10.0.0.1",
        netns_present=True,
        processes={"sshd": True},
        namespace_role="holder",
    )
    assert "node1: holder was never started" in health.problems


def test_native_preflight_needs_zfsutils_not_zfs_fuse() -> None:
    def without(missing: str):  # type: ignore[no-untyped-def]
        return lambda name: None if name == missing else "/bin/x"

    assert preflight.check_native_programs(without("zfs-fuse")) is None
    problem = preflight.check_native_programs(without("zpool"))
    assert problem is not None and "zfsutils-linux" in problem
    assert "modprobe zfs" in (preflight.check_kernel_zfs(Path("/nonexistent/zfs")) or "")


def test_agent_start_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from zflock.lab.agents import START_TIMEOUT_ENV, start_timeout

    monkeypatch.delenv(START_TIMEOUT_ENV, raising=False)
    assert start_timeout() == 90.0
    monkeypatch.setenv(START_TIMEOUT_ENV, "450")
    assert start_timeout() == 450.0
    monkeypatch.setenv(START_TIMEOUT_ENV, "7m30s")
    assert start_timeout() == 450.0
    for bad in ("soon", "0", "-5", "nan", "inf", "1.5"):
        monkeypatch.setenv(START_TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=rf"invalid \${START_TIMEOUT_ENV} '{bad}'"):
            start_timeout()
