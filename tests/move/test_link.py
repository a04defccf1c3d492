"""Every stream goes through one replication link (zflock/agent/link.py): `zflock
replicate` and a whole move each talk to the destination over one connection.

Read from the destination agent's log, where every request names the connection it
came on (host:port): all of the source's requests of one replicate, or of one move
(its preflight, pre-copy rounds, final delta, verify and promote), share one port.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from tests.agentlab import AgentLab
from tests.move.conftest import moved

pytestmark = pytest.mark.lab

# What a link asks its peer (other requests, e.g. the self-fencing pings, have their own
# connection and are not streams).
LINK_OPS = {"node_info", "replica_state", "prepare_replica", "receive_snapshot",
            "prune_replica", "promote_replica", "resolve_move"}  # fmt: skip
REQUEST = re.compile(r"\bop=(?P<op>\S+) .*request from (?P<host>[^\s:]+):(?P<port>\d+)$")


def log_size(lab: AgentLab, node: str) -> int:
    from zflock.lab import agents

    return agents.agent_log(lab.state.nodes[node]).stat().st_size


def ops_since(lab: AgentLab, node: str, offset: int, source: str) -> dict[str, list[str]]:
    """The ops `node`'s agent was asked by `source`'s agent since `offset`, in order, by
    port."""
    from zflock.lab import agents

    with agents.agent_log(lab.state.nodes[node]).open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    address = lab.state.nodes[source].address
    ports: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        found = REQUEST.search(line)
        if found and found["host"] == address and found["op"] in LINK_OPS:
            ports[found["port"]].append(found["op"])
    return dict(ports)


def requests_since(lab: AgentLab, node: str, offset: int, source: str) -> dict[str, set[str]]:
    """The ops `node`'s agent was asked by `source`'s agent since `offset`, by port."""
    return {port: set(ops) for port, ops in ops_since(lab, node, offset, source).items()}


def create_with_data(lab: AgentLab, volume: str) -> None:
    r = lab.cli("create", volume, "--on", "node1")
    assert r.returncode == 0, r.stderr
    lab.sh("node1", f"head -c {2 << 20} /dev/urandom > /zflock/{volume}/data.bin")


def test_replicate_talks_to_the_replica_over_one_connection(agent_lab: AgentLab) -> None:
    create_with_data(agent_lab, "lk1")
    for _ in range(2):  # a full send, then an incremental one
        offset = log_size(agent_lab, "node2")
        r = agent_lab.cli("replicate", "lk1", "--to", "node2")
        assert r.returncode == 0, r.stderr
        ports = requests_since(agent_lab, "node2", offset, "node1")
        assert len(ports) == 1, ports
        assert {"replica_state", "receive_snapshot"} <= next(iter(ports.values())), ports


def test_a_move_talks_to_its_destination_over_one_connection(agent_lab: AgentLab) -> None:
    create_with_data(agent_lab, "lk2")
    offset = log_size(agent_lab, "node2")
    report = moved(agent_lab, "lk2", "node2")
    assert report["result"] == "moved", report
    ports = requests_since(agent_lab, "node2", offset, "node1")
    # Preflight (node_info), pre-copy and final delta, verify, promote: one connection.
    assert len(ports) == 1, ports
    ops = next(iter(ports.values()))
    assert {"node_info", "replica_state", "receive_snapshot", "promote_replica"} <= ops, ops


def test_a_moves_rounds_after_an_incremental_do_not_ask_the_replica_again(
    agent_lab: AgentLab,
) -> None:
    """The link remembers what its own steps left (agent/link.py): the replica's state is
    asked at connect and after the full first round (a full stream's result is not
    guessed), never after an incremental one, so the final delta, inside the downtime,
    asks nothing before it streams."""
    create_with_data(agent_lab, "lk3")
    offset = log_size(agent_lab, "node2")
    report = moved(agent_lab, "lk3", "node2")
    assert report["result"] == "moved", report
    rounds = report["rounds"]
    assert isinstance(rounds, list) and len(rounds) >= 2, report  # full, then incremental
    [ops] = ops_since(agent_lab, "node2", offset, "node1").values()
    assert ops.count("replica_state") == 2, ops  # was one per round, the final delta too
    assert ops.count("receive_snapshot") == len(rounds) + 1, ops  # the rounds, the final
    assert ops[-3:] == ["receive_snapshot", "receive_snapshot", "promote_replica"], ops
