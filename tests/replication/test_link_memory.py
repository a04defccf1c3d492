"""A scheduled run starts from what the run before left of both copies
(agent/link_memory.py), between real agents.

Read from the replica agent's log, where every request names its op and the
connection it came on: a run that remembers asks the replica no `replica_state`
(the walk of every snapshot there), only to receive and to prune, and the runs
share one kept connection (agent/peer_pool.py). Anything else
that takes the volume's lock in between (`zflock snapshot`) makes the next run
read both copies again, and so does a failed run: an operator's `zfs destroy` of
the replica's newest snapshot, behind zflock's back, fails one run at most, and
the one after catches up incrementally from the base they still share.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.agentlab import AgentLab, wait_until
from tests.move.test_link import log_size, ops_since
from tests.replication.test_scheduler import guids, schedules
from zflock.agent.peer_pool import PeerPool
from zflock.cluster.config import load_inventory
from zflock.rpc import messages as m

pytestmark = pytest.mark.lab

RUN = ["receive_snapshot", "prune_replica"]  # a remembering run's requests, in order
FIRST = ["replica_state", *RUN]  # one that reads the replica first


def runs_since(lab: AgentLab, offset: int) -> list[list[str]]:
    """The runs node1's scheduler made to node2 since `offset`, each as its ops: the
    connection's requests in order, cut after each prune (a run's last request)."""
    runs: list[list[str]] = [[]]
    for ops in ops_since(lab, "node2", offset, "node1").values():
        for op in ops:
            runs[-1].append(op)
            if op == "prune_replica":
                runs.append([])
    return [run for run in runs if run]


def wait_runs(lab: AgentLab, offset: int, count: int) -> list[list[str]]:
    """At least `count` whole runs since `offset` (a run's last request is its prune)."""
    done: list[list[str]] = []

    def enough() -> bool:
        done[:] = [r for r in runs_since(lab, offset) if r and r[-1] == "prune_replica"]
        return len(done) >= count

    wait_until(f"{count} scheduled runs to node2", enough, timeout=120, interval=0.5)
    return done


def test_scheduled_runs_start_from_what_the_run_before_left(agent_lab: AgentLab) -> None:
    lab = agent_lab
    volume = "remember"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    lab.sh("node1", f"head -c 300000 /dev/urandom > /zflock/{volume}/a.bin")
    r = lab.cli("replicate", volume, "--to", "node2", "--every", "1s")
    assert r.returncode == 0, r.stderr
    try:
        wait_runs(lab, 0, 2)
        # From the run after the first, none reads the replica again.
        offset = log_size(lab, "node2")
        runs = wait_runs(lab, offset, 4)
        remembering = [run for run in runs[1:] if run == RUN]
        assert len(remembering) >= 2, runs
        # And they share one kept connection (agent/peer_pool.py), not one each.
        assert len(ops_since(lab, "node2", offset, "node1")) < len(runs), runs

        # Another operation takes the volume's lock: the next run reads both copies
        # (runs before it, or one cut by the offset, may show up first).
        offset = log_size(lab, "node2")
        assert lab.cli("snapshot", volume).returncode == 0
        runs = wait_runs(lab, offset, 3)
        assert FIRST in runs, runs

        # Behind zflock's back: the replica's newest snapshot destroyed on node2. The
        # remembering run fails at most once (the receiver checks its base), and then
        # the replica catches up incrementally from the base both still have.
        newest = lab.sh("node2", f"zfs list -H -t snapshot -o name -r {lab.ds('node2', volume)}")
        lab.sh("node2", f"zfs destroy {newest.split()[-1]}")
        lab.sh("node1", f"head -c 200000 /dev/urandom > /zflock/{volume}/b.bin")
        offset = log_size(lab, "node2")
        wait_runs(lab, offset, 2)

        def caught_up() -> bool:
            link = schedules(lab, volume).get("node2")
            return (
                link is not None
                and link["last_result"] == "ok"
                and guids(lab, "node2", volume)[-1:] == guids(lab, "node1", volume)[-1:]
            )

        wait_until("node2 to catch up", caught_up, timeout=60, interval=0.5)
        link = schedules(lab, volume)["node2"]
        assert link["last_kind"] in ("incremental", None), link  # never a full resend
        assert set(guids(lab, "node2", volume)) <= set(guids(lab, "node1", volume))
    finally:
        assert lab.cli("replicate", volume, "--stop").returncode == 0
    assert lab.checksums("node1", volume) == lab.checksums("node2", volume)


def test_a_failed_run_retires_its_connection_without_cutting_the_others(
    agent_lab: AgentLab,
) -> None:
    """The pool (agent/peer_pool.py) against a real agent: runs to one peer share one
    connection; one that fails retires it (the next run connects again) but the run
    still using it goes on, and the connection is closed when that one is done."""
    inventory = load_inventory(agent_lab.cluster_file)
    assert inventory.identity is not None
    key = asyncssh.read_private_key(str(inventory.identity))
    node2 = inventory.node("node2")

    async def go() -> None:
        pool = PeerPool(lambda: key)
        first, second = await pool.client(node2), await pool.client(node2)
        assert first is second and len(pool) == 1
        await pool.release(first, failed=True)  # one run failed...
        await first.call("node_info", m.Empty())  # ...the other's calls still go through
        third = await pool.client(node2)
        assert third is not first  # the next run gets a new connection
        await pool.release(second)
        assert not first.is_open()  # closed once its last run let go
        await pool.release(third)
        assert third.is_open() and len(pool) == 1  # kept for the next run
        await pool.close()
        assert not third.is_open()

    asyncio.run(go())
