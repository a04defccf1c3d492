"""A lab with running agents, and what tests do with it (shared by several test packages)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.labfixture import LAB_POOL_SIZE, lab_session
from zflock.lab.state import LabState

Result = subprocess.CompletedProcess[str]

# How much slower than a plain 2-core host this run is: the OpenZFS tier runs the
# lab under qemu's software emulation (tests/openzfs-vm sets it). Timeouts are
# liveness bounds, never measurements, so they stretch by this factor; streams a
# test must catch in flight shrink by it (they still last as long).
SLOWDOWN = float(os.environ.get("ZFLOCK_TEST_SLOWDOWN", "1"))


def patience(seconds: float) -> float:
    """A timeout of `seconds` on a plain host, stretched for a slow tier."""
    return seconds * SLOWDOWN


def scaled_mib(mib: int) -> int:
    """A stream size chosen for a plain host, shrunk for a slow tier (at least 8 MiB)."""
    return max(8, int(mib / SLOWDOWN))


def wait_until(
    what: str, check: Callable[[], bool], timeout: float = 60, interval: float = 0.05
) -> None:
    """Poll `check` until it holds; fail the test, naming `what`, after `timeout` seconds."""
    deadline = time.monotonic() + patience(timeout)
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


@dataclass
class AgentLab:
    state: LabState
    cluster_file: Path
    env: dict[str, str]

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `zflock ARGS` as an operator would, against this lab's inventory."""
        return subprocess.run(
            [sys.executable, "-m", "zflock", *args],
            capture_output=True,
            text=True,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            timeout=patience(120),
        )

    def node_run(self, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
        from zflock import lab

        return subprocess.run(
            [*lab.node_prefix(self.state, node), *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=patience(60),
        )

    def ds(self, node: str, volume: str = "") -> str:
        """The dataset of `volume` on `node` (its pool root without a volume): `tank/zflock/...`
        on zfs-fuse, `zl<lab>n<i>/zflock/...` on kernel ZFS, where pools are machine-wide."""
        root = self.state.nodes[node].pool_root
        return f"{root}/{volume}" if volume else root

    def zfs_state(self) -> dict[str, str]:
        """Every dataset and snapshot with its zflock properties, per node: to prove no change."""
        out = {}
        for node in self.state.nodes:
            r = self.node_run(
                node, "zfs", "get", "-H", "-r", "-o", "name,property,value",
                "type,zflock:volume,zflock:id,zflock:epoch,zflock:role,readonly,mounted,quota",
                self.state.nodes[node].pool,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            out[node] = r.stdout
        return out

    # -- data on volumes ------------------------------------------------------------

    def sh(self, node: str, script: str) -> str:
        """Run a test-written shell script inside the node; fail the test if it fails."""
        r = self.node_run(node, "sh", "-c", script)
        assert r.returncode == 0, f"{node}: {script!r} failed: {r.stderr}"
        return r.stdout

    def checksums(self, node: str, volume: str) -> dict[str, str]:
        """sha256 of every file of the volume's copy on `node` (a replica is mounted briefly)."""
        dataset = self.ds(node, volume)
        mounted = self.zget(node, dataset, "mounted")["mounted"] == "yes"
        if not mounted:
            self.sh(node, f"zfs mount {dataset}")
        try:
            script = f"cd /zflock/{volume} && find . -type f | sort | xargs -r sha256sum"
            out = self.sh(node, script)
        finally:
            if not mounted:
                self.sh(node, f"zfs unmount {dataset}")
        sums = {}
        for line in out.splitlines():
            digest, name = line.split(maxsplit=1)
            sums[name] = digest
        return sums

    def zget(self, node: str, dataset: str, *props: str) -> dict[str, str]:
        argv = ["zfs", "get", "-H", "-p", "-o", "property,value", ",".join(props), dataset]
        r = self.node_run(node, *argv)
        assert r.returncode == 0, r.stderr
        return dict(line.split("\t", 1) for line in r.stdout.splitlines())

    def snapshot_guids(self, node: str, dataset: str) -> list[int]:
        """GUIDs of the dataset's snapshots, oldest first ([] if it does not exist)."""
        r = self.node_run(node, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
        names = [n for n in r.stdout.split() if n.startswith(dataset + "@")]
        return [int(self.zget(node, n, "guid")["guid"]) for n in names]

    def datasets(self, node: str) -> list[str]:
        r = self.node_run(node, "zfs", "list", "-H", "-o", "name", "-r", self.ds(node))
        return r.stdout.split()

    def agent_pid(self, node: str) -> int:
        return self.state.nodes[node].processes["agent"].pid

    def kill_agent(self, node: str) -> None:
        """SIGKILL the node's agent (a crash) and wait until it is gone, so that
        `agents.start` afterwards really starts a new one."""
        from zflock.lab import agents

        agents.kill(self.state.nodes[node])


@contextmanager
def agent_lab_session(nodes: int = 3, *, pool_size: int = LAB_POOL_SIZE) -> Iterator[AgentLab]:
    """A uniquely named lab (agents included), always taken down."""
    from zflock.lab import agents

    with lab_session(nodes=nodes, pool_size=pool_size) as state:
        cluster_file = agents.cluster_file(state)
        env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file), "COLUMNS": "200"}
        yield AgentLab(state=state, cluster_file=cluster_file, env=env)
