"""What the replication lab tests do with a lab: replicate, check a refusal, call an agent
directly, and move raw ZFS streams between nodes (to build states an agent would leave)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncssh
from prometheus_client.parser import text_string_to_metric_families

from tests.agentlab import AgentLab, patience
from zflock.cluster.config import DEFAULT_METRICS_PORT, load_inventory
from zflock.lab.nodes import node_prefix
from zflock.replication.model import SnapRef
from zflock.rpc.client import AgentClient


async def call_agent(lab: AgentLab, node: str, op: str, args: object) -> object:
    async with await connect(lab, node) as client:
        return await client.call(op, args)


async def connect(lab: AgentLab, node: str) -> AgentClient:
    """A client of `node`'s agent with the lab operator's key (use `async with`)."""
    inventory = load_inventory(lab.cluster_file)
    assert inventory.identity is not None
    key = asyncssh.read_private_key(str(inventory.identity))
    return AgentClient(inventory.node(node), key)


def zfs_commands(lab: AgentLab, node: str) -> Counter[str]:
    """How many `zfs` commands of each subcommand the node's agent has run (its metrics)."""
    address = lab.state.nodes[node].address
    url = f"http://{address}:{DEFAULT_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=patience(10)) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "zflock_zfs_command_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("command") == "zfs":
                counts[sample.labels["subcommand"]] += int(sample.value)
    return counts


def replicate(lab: AgentLab, volume: str, to: str, *extra: str) -> dict[str, Any]:
    r = lab.cli("replicate", volume, "--to", to, "--json", *extra)
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def refused(lab: AgentLab, volume: str, to: str, *needles: str, command: str = "replicate") -> None:
    """`zflock COMMAND VOLUME --to TO` fails with one line naming `needles`; nothing changed."""
    before = lab.zfs_state()
    r = lab.cli(command, volume, "--to", to)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert lab.zfs_state() == before


def send_bytes(lab: AgentLab, node: str, snapshot: str, base: str | None = None) -> bytes:
    """A `zfs send` stream of `snapshot` on `node` (incremental from `base`), whole."""
    argv = ["zfs", "send", *(["-i", base] if base else []), snapshot]
    done = subprocess.run(
        [*node_prefix(lab.state, node), *argv], capture_output=True, timeout=patience(120)
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def raw_receive(lab: AgentLab, node: str, dataset: str, stream: bytes) -> None:
    """`zfs receive DATASET` on `node`, as the agent runs it, with nothing around it."""
    done = subprocess.run(
        [*node_prefix(lab.state, node), "zfs", "receive", dataset],
        input=stream,
        capture_output=True,
        timeout=patience(120),
    )
    assert done.returncode == 0, done.stderr


def snaprefs(lab: AgentLab, node: str, dataset: str) -> list[SnapRef]:
    """The dataset's snapshots as the planner sees them (listing order)."""
    r = lab.node_run(node, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
    names = [n for n in r.stdout.split() if n.startswith(dataset + "@")]
    return [
        SnapRef(n.split("@", 1)[1], int(lab.zget(node, n, "guid")["guid"]), order=i)
        for i, n in enumerate(names)
    ]


async def chunks_of(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
