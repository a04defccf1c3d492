"""`zflock replicate --every/--keep/--stop`: the policy stored on the primary, between real agents.

The policy lives as ZFS user properties on the primary's dataset; `ls`
shows it; `--stop` removes it; bad policies are one-line usage errors that
change nothing (ZFS state and policy properties compared before and after).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.agentlab import AgentLab

pytestmark = pytest.mark.lab

POLICY_PROPS = "zflock:replicate-to,zflock:every,zflock:keep,zflock:keep-replica"


def policy_props(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    props = lab.zget(node, lab.ds(node, volume), *POLICY_PROPS.split(","))
    return {k: v for k, v in props.items() if v != "-"}


def everything(lab: AgentLab) -> dict[str, str]:
    """ZFS state and every policy property on every node, snapshots left out: the
    primary's scheduler keeps the stored policy meanwhile (docs/replication.md)."""
    state = lab.zfs_state()
    for node in lab.state.nodes:
        r = lab.node_run(
            node, "zfs", "get", "-H", "-r", "-o", "name,property,value", POLICY_PROPS,
            lab.state.nodes[node].pool,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        state[node + ":policy"] = r.stdout
    return {
        key: "".join(line for line in text.splitlines(True) if "@" not in line.split("\t")[0])
        for key, text in state.items()
    }


def ls_copy(lab: AgentLab, volume: str, node: str) -> dict[str, Any]:
    [vol] = json.loads(lab.cli("ls", volume, "--json").stdout)["volumes"]
    copy: dict[str, Any] = next(c for c in vol["copies"] if c["node"] == node)
    return copy


def status_policies(lab: AgentLab) -> list[dict[str, Any]]:
    r = lab.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return [p for p in json.loads(r.stdout)["policies"] if p["volume"] == "pol"]


def test_policy_set_shown_stopped(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "pol", "--on", "node1").returncode == 0
    lab.sh("node1", "echo data > /zflock/pol/f.txt")

    r = lab.cli("replicate", "pol", "--to", "node2", "--every", "30s", "--keep", "last=5", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["policy"]["targets"] == ["node2"]
    assert out["policy"]["every"] == "30s"
    assert out["policy"]["keep"] == "last=5"
    assert [s["destination"] for s in out["syncs"]] == ["node2"]  # one sync now
    assert lab.checksums("node2", "pol") == lab.checksums("node1", "pol")
    props = policy_props(lab, "node1", "pol")
    assert props["zflock:replicate-to"] == "node2"
    assert props["zflock:every"] == "30s"
    assert props["zflock:keep"] == "last=5"
    assert props["zflock:keep-replica"] == "1x1h(keep=all) | 24x1h | 14x1d"  # the default
    assert ls_copy(lab, "pol", "node1")["policy"]["targets"] == ["node2"]
    assert "node2 every 30s" in lab.cli("ls", "pol").stdout
    [shown] = status_policies(lab)
    assert (shown["node"], shown["targets"], shown["every"]) == ("node1", ["node2"], "30s")
    assert shown["error"] is None
    assert "last=5" in lab.cli("status").stdout

    # Bad policies: one line, exit 2, nothing changed anywhere.
    before = everything(lab)
    cases = [
        (["--to", "node2", "--every", "0s"], "must be positive"),
        (["--to", "node2", "--every", "30d"], "between 1s and 1w"),
        (["--to", "node1", "--every", "30s"], "is the primary"),
        (["--to", "node2,node2", "--every", "30s"], "given twice"),
        (["--to", "node9", "--every", "30s"], "unknown node"),
        (["--to", "node2", "--every", "30s", "--keep", "forever"], "invalid keep rules"),
        (["--to", "node2", "--keep", "last=1"], "give --every too"),
        (["--stop", "--to", "node3"], "'node3' is not a replication target"),
        (["--stop", "--every", "30s"], "--stop takes only --to"),
    ]
    for args, message in cases:
        r = lab.cli("replicate", "pol", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert everything(lab) == before

    # A second target is added; the interval given last wins.
    r = lab.cli("replicate", "pol", "--to", "node3", "--every", "1m", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["policy"]["targets"] == ["node2", "node3"]
    assert policy_props(lab, "node1", "pol")["zflock:every"] == "1m"

    # --stop --to one target keeps the other; --stop alone removes the policy.
    r = lab.cli("replicate", "pol", "--stop", "--to", "node2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["targets"] == ["node3"]
    assert policy_props(lab, "node1", "pol")["zflock:replicate-to"] == "node3"
    r = lab.cli("replicate", "pol", "--stop")
    assert r.returncode == 0, r.stderr
    assert policy_props(lab, "node1", "pol") == {}
    assert ls_copy(lab, "pol", "node1")["policy"] is None
    assert status_policies(lab) == []

    # A damaged policy is shown as damaged, never as no policy; restating repairs it.
    lab.node_run("node1", "zfs", "set", "zflock:replicate-to=node2", lab.ds("node1", "pol"))
    copy = ls_copy(lab, "pol", "node1")
    assert copy["policy"] is None
    assert "zflock:keep is missing" in copy["policy_error"]
    assert "damaged" in lab.cli("ls", "pol").stdout
    assert "zflock:keep is missing" in status_policies(lab)[0]["error"]
    r = lab.cli("replicate", "pol", "--to", "node2", "--every", "10s", "--json")
    assert r.returncode == 0, r.stderr
    assert ls_copy(lab, "pol", "node1")["policy"]["every"] == "10s"
