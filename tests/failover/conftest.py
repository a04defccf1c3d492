"""A 3-node lab with agents for the failover tests of one module (issue 12).

Every agent runs with a short `self_fence_after` (stretched by
ZFLOCK_TEST_SLOWDOWN like every liveness bound), so that a failover waits
seconds, not the default 30 s, for the old primary to have fenced itself.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience
from zflock.lab import agents

# Seconds: short for tests, and above the lease's floor (zflock.cluster.lease).
SELF_FENCE_AFTER = patience(4.0)


def failover_toml(self_fence_after: float = SELF_FENCE_AFTER) -> str:
    return f"\n[failover]\nself_fence_after = {self_fence_after:g}\n"


@pytest.fixture(scope="module")
def failover_lab() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=3, pool_size=1 << 30) as lab:
        for node in lab.state.nodes.values():
            config = agents.agent_dir(node) / "agent.toml"
            config.write_text(config.read_text() + failover_toml())
            agents.stop(node)
            agents.start(lab.state, node)
        yield lab


@pytest.fixture(autouse=True)
def _healed_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test of a failover lab, pass or fail: every link up and every agent
    running, so that one test's failure midway (a node left cut off or down) does not
    fail the next ones of the module with it."""
    yield
    if "failover_lab" in request.fixturenames:
        lab: AgentLab = request.getfixturevalue("failover_lab")
        for name, node in lab.state.nodes.items():
            set_link(lab, name, up=True)
            agents.start(lab.state, node)  # a no-op where the agent runs


@pytest.fixture
def writer_dir(tmp_path: Path) -> Path:
    # tmp_path is on the host's filesystem: every node's mount namespace sees it.
    return tmp_path


def set_link(lab: AgentLab, node: str, up: bool) -> None:
    """Take `node`'s only network link down (or up), from the host's side."""
    veth = lab.state.nodes[node].host_veth
    subprocess.run(["ip", "link", "set", veth, "up" if up else "down"], check=True)


def kill_agent(lab: AgentLab, node: str) -> None:
    """SIGKILL the node's agent by the PID the lab recorded (a crash, no clean-up)."""
    lab.kill_agent(node)


def restart_agent(lab: AgentLab, node: str) -> None:
    """Start the node's agent again (after kill_agent) and wait until it listens."""
    state = lab.state.nodes[node]
    agents.stop(state)  # forgets the killed process (stop by its recorded PID is a no-op)
    agents.start(lab.state, state)
