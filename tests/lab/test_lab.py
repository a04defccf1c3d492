"""A real 3-node lab: namespaces, ZFS per node, sshd, the CLI (needs root).

Backend-neutral: zfs-fuse daemons by default, kernel ZFS in the OpenZFS tier
(ZFLOCK_LAB_ZFS=native), where each node has its own pool name.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab.helpers import zflock
from zflock import lab as labapi
from zflock.lab import LabState, procs

pytestmark = pytest.mark.lab


def run_in(state: LabState, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*labapi.node_prefix(state, node), *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def pool_guid(state: LabState, node: str) -> str:
    # (zfs-fuse's `zpool get` has no -H; the root dataset's GUID is as unique.)
    pool = state.nodes[node].pool
    r = run_in(state, node, "zfs", "get", "-H", "-p", "-o", "value", "guid", pool)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_three_nodes_are_up(lab: LabState) -> None:
    assert list(lab.nodes) == ["node1", "node2", "node3"]
    health = labapi.inspect(lab)
    assert health.healthy, health.problems
    for node in lab.nodes.values():
        r = run_in(lab, node.name, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
        assert f"inet {node.address}/24" in r.stdout
        assert set(node.processes) == {node.namespace_role, "sshd", "agent"}
        assert all(procs.is_running(rec) for rec in node.processes.values())
    assert [n.pool.health for n in health.nodes if n.pool] == ["ONLINE"] * 3
    # The host is a client of the lab: it reaches every node's sshd.
    for node in lab.nodes:
        r = subprocess.run(
            labapi.ssh_argv(lab, node, "true"), capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, r.stderr


def test_each_pool_is_visible_only_inside_its_node(lab: LabState) -> None:
    guids = {node: pool_guid(lab, node) for node in lab.nodes}
    assert len(set(guids.values())) == 3  # three different pools (all named tank on zfs-fuse)
    marker = f"{lab.nodes['node1'].pool_root}/only-on-node1"
    r = run_in(lab, "node1", "zfs", "create", marker)
    assert r.returncode == 0, r.stderr
    try:
        r = run_in(lab, "node1", "zfs", "list", "-H", "-o", "mountpoint", marker)
        assert r.stdout.strip() == "/zflock/only-on-node1"
        r = run_in(lab, "node1", "touch", "/zflock/only-on-node1/file")
        assert r.returncode == 0, r.stderr
        for other in ("node2", "node3"):
            if lab.backend == "fuse":
                # Kernel pools are machine-wide; there only the mounts are private.
                r = run_in(lab, other, "zfs", "list", marker)
                assert r.returncode != 0 and "does not exist" in r.stderr
            assert run_in(lab, other, "test", "-e", "/zflock/only-on-node1").returncode == 1
        # Nothing of the node's ZFS reaches the host's mount table or tree.
        host_mounts = Path("/proc/self/mounts").read_text()
        assert "only-on-node1" not in host_mounts
        assert "fuse" not in "".join(
            line for line in host_mounts.splitlines() if " /zflock" in line
        )
        assert not Path("/zflock/only-on-node1").exists()
    finally:
        run_in(lab, "node1", "zfs", "destroy", "-r", marker)


def test_a_node_reaches_another_nodes_sshd_and_its_zfs(lab: LabState) -> None:
    # ssh from inside node1 to node2: the session runs in node2's namespaces,
    # so it sees node2's pool (by GUID), not node1's.
    r = run_in(
        lab,
        "node1",
        *labapi.ssh_argv(
            lab, "node2", "zfs", "get", "-H", "-p", "-o", "value", "guid", lab.nodes["node2"].pool
        ),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [pool_guid(lab, "node2")]
    # and the connection came from node1's address
    r = run_in(lab, "node1", *labapi.ssh_argv(lab, "node2", "printenv", "SSH_CLIENT"))
    assert r.stdout.split()[0] == lab.nodes["node1"].address


def test_exec_runs_inside_the_node(lab: LabState) -> None:
    node2 = lab.nodes["node2"]
    r = zflock("lab", "exec", "--name", lab.name, "node2", "--", "ip", "-4", "-o", "addr")
    assert r.returncode == 0, r.stderr
    assert f"inet {node2.address}/24" in r.stdout
    assert lab.nodes["node1"].address not in r.stdout
    r = zflock(
        "lab", "exec", "--name", lab.name, "node2", "--", "zpool", "list", "-H", "-o", "name"
    )
    assert r.returncode == 0 and lab.nodes["node2"].pool in r.stdout.split(), r.stderr
    # The exit status and stdin pass through unchanged; argv is not re-parsed.
    r = zflock("lab", "exec", "--name", lab.name, "node3", "--", "python3", "-c",
               "import sys; sys.exit(7)")  # fmt: skip
    assert r.returncode == 7
    r = zflock("lab", "exec", "--name", lab.name, "node1", "--", "cat", input=b"a;b $(x)\n")
    assert r.returncode == 0 and r.stdout == "a;b $(x)\n"
    r = zflock("lab", "exec", "--name", lab.name, "node1", "--", "readlink", "/proc/self/ns/net")
    assert r.stdout.strip() == f"net:[{lab.nodes['node1'].net_ns_inode}]"


def test_exec_unknown_node_is_a_usage_error(lab: LabState) -> None:
    r = zflock("lab", "exec", "--name", lab.name, "node9", "--", "true")
    assert r.returncode == 2
    assert "unknown node 'node9'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_status_table_and_json(lab: LabState) -> None:
    r = zflock("lab", "status", "--name", lab.name)
    assert r.returncode == 0, r.stderr
    for node in lab.nodes.values():
        assert node.address in r.stdout and node.netns in r.stdout
    assert r.stdout.count("ONLINE") == 3
    import json

    r = zflock("lab", "status", "--name", lab.name, "--json")
    data = json.loads(r.stdout)
    assert data["healthy"] is True
    assert data["nodes"]["node2"]["processes"]["sshd"]["alive"] is True
    assert data["nodes"]["node3"]["pool_info"]["health"] == "ONLINE"


def test_up_again_is_idempotent(lab: LabState) -> None:
    r = zflock("lab", "up", "--nodes", "3", "--name", lab.name)
    assert r.returncode == 0, r.stderr
    assert "already up" in r.stdout
    assert labapi.load_state(lab.name).to_json() == lab.to_json()  # nothing restarted
    r = zflock("lab", "up", "--nodes", "2", "--name", lab.name)
    assert r.returncode == 1
    assert "already up with 3 nodes" in r.stderr


async def test_api_works_inside_an_event_loop(lab: LabState) -> None:
    # Fixtures of async tests call the sync API while a loop runs.
    assert labapi.inspect(lab).healthy
