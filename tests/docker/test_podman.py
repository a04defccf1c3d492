"""Podman uses the same plugin through containers.conf's [engine.volume_plugins] (docs/docker.md).

Podman has no daemon: each `podman` command runs inside the lab node (its
network and mount namespaces) with its own storage root, run root and
containers.conf under the node's directory, so the host's podman is untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from tests.docker.dockerlab import NodeDocker, busybox_rootfs_tar
from zflock import lab
from zflock.lab import agents

PODMAN = "/usr/bin/podman"
PODMAN_MOUNT_TIMEOUT = 3.0
pytestmark = pytest.mark.lab

# cgroupfs and a file event log: no systemd here. The ulimits: podman's
# defaults (as root: the hard limits) are above what this host lets runc set.
CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
[engine.volume_plugins]
zflock = "/run/docker/plugins/zflock.sock"
"""


@dataclass
class NodePodman:
    agent_lab: AgentLab
    node: str
    root: Path

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "containers.conf").write_text(CONF)
        setup = NodeDocker(self.agent_lab, self.node, self.root)
        setup.bind_plugin_dir()
        setup.mount_cgroups()

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [
            *lab.node_prefix(self.agent_lab.state, self.node), PODMAN,
            "--root", str(self.root / "storage"), "--runroot", str(self.root / "run"),
            "--storage-driver", "overlay", *args,
        ]  # fmt: skip
        env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}
        r = subprocess.run(
            argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
            timeout=patience(120),
        )  # fmt: skip
        if check:
            assert r.returncode == 0, f"{self.node}: podman {' '.join(args)}: {r.stderr.strip()}"
        return r


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodePodman]]:
    if not os.path.exists(PODMAN):
        reason = f"{PODMAN} missing (.ci/setup installs Debian's podman)"
        if os.environ.get("ZFLOCK_DOCKER_REQUIRED"):
            pytest.fail(reason)
        pytest.skip(reason)
    tar = busybox_rootfs_tar(tmp_path_factory.mktemp("podman"))
    with agent_lab_session(nodes=2) as agent_lab:
        nodes = {
            name: NodePodman(agent_lab, name, node.dir / "podman")
            for name, node in agent_lab.state.nodes.items()
        }
        for name, p in nodes.items():
            p.prepare()
            p.podman("import", str(tar), "zflock-busybox:test")
            # Podman waits ~5 s for a plugin call (Docker ~30 s): answer well before.
            node = agent_lab.state.nodes[name]
            with open(agents.agent_dir(node) / "agent.toml", "a") as toml:
                toml.write(f"docker_mount_timeout = {PODMAN_MOUNT_TIMEOUT}\n")
            agents.stop(node)
            agents.start(agent_lab.state, node)
        yield nodes


def test_podman_volume_follows_its_container(pods: dict[str, NodePodman]) -> None:
    node1, node2 = pods["node1"], pods["node2"]
    agent_lab = node1.agent_lab
    node1.podman("volume", "create", "--driver", "zflock", "-o", "size=32M", "pv")
    run = ["run", "--rm", "--network", "none", "-v", "pv:/data", "zflock-busybox:test"]
    write = "for i in 1 2 3; do echo rec-$i >> /data/records; sync; echo ack-$i; done"
    assert node1.podman(*run, "sh", "-c", write).stdout.split() == ["ack-1", "ack-2", "ack-3"]
    node2.podman("volume", "create", "--driver", "zflock", "pv")  # the same volume
    first = node2.podman(*run, "cat", "/data/records", check=False)
    if first.returncode != 0:  # the move outlasted docker_mount_timeout: it goes on
        assert "it goes on in the background" in first.stderr, first.stderr

        def moved() -> bool:
            r = agent_lab.cli("ls", "--json", "pv")
            primary = json.loads(r.stdout)["volumes"][0]["primary"] if r.returncode == 0 else None
            return bool(primary == "node2")

        wait_until("the move to node2", moved)
        first = node2.podman(*run, "cat", "/data/records")
    assert first.stdout.split() == ["rec-1", "rec-2", "rec-3"]
    (info,) = json.loads(node2.podman("volume", "inspect", "pv").stdout)
    assert info["Status"]["primary"] == "node2" and info["Status"]["epoch"] == 2
    node2.podman("volume", "rm", "pv")
    r = agent_lab.cli("ls", "--json")
    assert json.loads(r.stdout)["volumes"] == []
