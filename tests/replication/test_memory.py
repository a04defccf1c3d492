"""A 1 GiB stream between agents with flat memory: both agents' peak RSS stays under 100 MB.

Asserts on memory, never on time. The figures are printed (run with -s, or
see the captured output of a failure).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agentlab import AgentLab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LIMIT = 100 << 20


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_one_gib_stream_keeps_agent_memory_flat(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "big", "--on", "node1").returncode == 0
    lab.sh("node1", "dd if=/dev/zero of=/zflock/big/zero bs=1M count=1024 2>/dev/null")
    r = lab.cli("replicate", "big", "--to", "node2", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["bytes"] >= 1 << 30
    source, destination = peak_rss(lab.agent_pid("node1")), peak_rss(lab.agent_pid("node2"))
    print(
        f"\n1 GiB stream: {report['bytes']} bytes in {report['seconds']} s; "
        f"peak RSS source agent {source >> 20} MiB, destination agent {destination >> 20} MiB"
    )
    assert source < LIMIT, source
    assert destination < LIMIT, destination
    sums = lab.checksums("node2", "big")
    assert sums == lab.checksums("node1", "big")
