"""A 3-node lab with running agents, shared by the agent tests of one module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.labfixture import lab_session
from zflock.lab.state import LabState

Result = subprocess.CompletedProcess[str]


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
            timeout=120,
        )

    def node_run(self, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
        from zflock import lab

        return subprocess.run(
            [*lab.node_prefix(self.state, node), *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def zfs_state(self) -> dict[str, str]:
        """Every dataset and snapshot with its zflock properties, per node: to prove no change."""
        out = {}
        for node in self.state.nodes:
            r = self.node_run(
                node, "zfs", "get", "-H", "-r", "-o", "name,property,value",
                "type,zflock:volume,zflock:id,zflock:epoch,zflock:role,readonly,mounted,quota",
                "tank",
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            out[node] = r.stdout
        return out


@pytest.fixture(scope="module")
def agent_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentLab]:
    from zflock.lab import agents

    with lab_session(nodes=3) as state:  # `lab up` starts the agents
        cluster_file = agents.cluster_file(state)
        env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file), "COLUMNS": "200"}
        yield AgentLab(state=state, cluster_file=cluster_file, env=env)
