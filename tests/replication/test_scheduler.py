"""The replication scheduler between real agents: replicas kept fresh, a replica node
down then back (backoff, incremental catch-up), `--stop` stops it.

Nothing here runs `zflock replicate` after the policy is set: every snapshot a
replica gains is the primary agent's scheduler at work. Replicas are compared by
snapshot GUID (each replica snapshot is one of the primary's) and, once stopped,
file by file.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, patience, wait_until
from tests.move.conftest import Writer
from zflock.cli.common import load_cluster
from zflock.lab import agents
from zflock.lab import state as lab_state
from zflock.replication.schedule import LATENESS_KEPT
from zflock.rpc import messages as m
from zflock.rpc.schedule_messages import ScheduleList

pytestmark = pytest.mark.lab

EVERY = 2  # seconds: short, so several runs fit in a test


def status(lab: AgentLab) -> dict[str, Any]:
    r = lab.cli("status", "--json")
    assert r.returncode in (0, 1), r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def schedules(lab: AgentLab, volume: str) -> dict[str, dict[str, Any]]:
    """The links of `volume` as its primary's scheduler reports them, by target."""
    return {s["target"]: s for s in status(lab)["schedules"] if s["volume"] == volume}


def node_schedules(lab: AgentLab, node: str) -> ScheduleList:
    """The `schedules` answer of one agent, as the scale benchmark reads it."""
    cluster = load_cluster(lab.cluster_file, None, timeout=patience(30))
    answer: ScheduleList = asyncio.run(cluster.call(node, "schedules", m.Empty()))
    return answer


def ls_replicas(lab: AgentLab, volume: str) -> dict[str, dict[str, Any]]:
    r = lab.cli("ls", volume, "--json")
    [vol] = json.loads(r.stdout)["volumes"]
    return {c["node"]: c for c in vol["copies"] if c["node"] != vol["primary"]}


def guids(lab: AgentLab, node: str, volume: str) -> list[int]:
    return lab.snapshot_guids(node, lab.ds(node, volume))


def test_replicas_kept_fresh_under_a_writer_then_stopped(
    agent_lab: AgentLab, tmp_path: Path
) -> None:
    lab = agent_lab
    assert lab.cli("create", "fresh", "--on", "node1").returncode == 0
    writer = Writer(lab, "fresh", tmp_path)
    writer.start("node1")
    try:
        r = lab.cli("replicate", "fresh", "--to", "node2,node3", "--every", f"{EVERY}s")
        assert r.returncode == 0, r.stderr
        first = {n: guids(lab, n, "fresh") for n in ("node2", "node3")}

        # Each replica gains several snapshots with no command run: the scheduler's.
        def advanced() -> bool:
            return all(len(guids(lab, n, "fresh")) >= len(first[n]) + 3 for n in first)

        wait_until("three scheduled syncs to each replica", advanced, timeout=90, interval=0.5)
        # Every replica snapshot is one of the primary's. The replicas are read first: a
        # snapshot a replica holds was on the primary before it got there, and nothing
        # is pruned in this test (the default rules keep all of the last hour), so the
        # primary still has it when read after. The other way round, a run finishing
        # between the reads adds one to a replica but not to the primary's older list.
        held = {n: set(guids(lab, n, "fresh")) for n in first}
        primary = set(guids(lab, "node1", "fresh"))
        for node, have in held.items():
            assert have <= primary, (node, have - primary)
        links = schedules(lab, "fresh")
        assert set(links) == {"node2", "node3"}
        for link in links.values():
            assert link["node"] == "node1" and link["every"] == EVERY
            assert link["failures"] == 0 and link["last_error"] is None

        # 2 manual + >= 4 scheduled, recorded: a run's snapshot reaches its replica
        # before the run ends (it prunes after), so wait for the record (CI once).
        def done() -> bool:
            jobs = [j for j in status(lab)["jobs"] if j["volume"] == "fresh"]
            return sum(j["state"] == "done" for j in jobs) >= 6

        wait_until("six replication jobs done", done, timeout=60, interval=0.5)
        # How late each scheduled run started: one value per run, none negative.
        answer = node_schedules(lab, "node1")
        assert answer.runs_started >= 4 and answer.runs_failed == 0
        assert len(answer.lateness) == min(answer.runs_started, LATENESS_KEPT)
        assert all(late >= 0 for late in answer.lateness)
        # ls: each replica's lag and state.
        for node, copy in ls_replicas(lab, "fresh").items():
            assert copy["replication"]["state"] in ("ok", "behind"), (node, copy)
            assert copy["replication"]["lag_s"] is not None
        shown = lab.cli("ls", "fresh").stdout
        assert "node2" in shown and "lag" in shown
    finally:
        writer.stop("node1")

    # The writer stopped: a later sync carries its last record to both replicas.
    stopped_at = guids(lab, "node1", "fresh")[-1]

    def caught_up() -> bool:
        have = {n: guids(lab, n, "fresh") for n in ("node2", "node3")}
        return all(stopped_at in g and g[-1] != stopped_at for g in have.values())

    wait_until("a sync after the writer stopped", caught_up, timeout=60, interval=0.5)

    # --stop: the schedule goes, and nothing more is sent.
    assert lab.cli("replicate", "fresh", "--stop").returncode == 0
    wait_until("the schedule to go", lambda: not schedules(lab, "fresh"), timeout=30)
    wait_until(
        "running syncs to end",
        lambda: all(j["state"] != "running" for j in status(lab)["jobs"]),
        timeout=60,
    )
    before = {n: guids(lab, n, "fresh") for n in ("node1", "node2", "node3")}
    time.sleep(patience(3 * EVERY))
    assert {n: guids(lab, n, "fresh") for n in before} == before
    for node in ("node2", "node3"):
        assert lab.checksums(node, "fresh") == lab.checksums("node1", "fresh")
    writer.verify_on("node1")


def test_replica_down_backoff_then_incremental_catch_up(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "down", "--on", "node1").returncode == 0
    lab.sh("node1", "head -c 2000000 /dev/urandom > /zflock/down/a.bin")
    r = lab.cli("replicate", "down", "--to", "node2", "--every", f"{EVERY}s")
    assert r.returncode == 0, r.stderr
    node2 = lab.state.nodes["node2"]
    agents.stop(node2)
    try:
        lab.sh("node1", "head -c 300000 /dev/urandom > /zflock/down/b.bin")

        def backing_off() -> bool:
            link = schedules(lab, "down").get("node2")
            return link is not None and link["failures"] >= 2

        wait_until("two failed runs to node2", backing_off, timeout=90, interval=0.5)
        link = schedules(lab, "down")["node2"]
        assert link["last_result"] == "failed"
        assert "node2" in link["last_error"]
        # Backoff, not the interval: the next run is well past two intervals away.
        assert link["next_run"] is None or link["next_run"] - time.time() > -patience(5)
        text = lab.cli("status").stdout
        assert "failing" in text and "node2" in text
        # Not a hot loop: at most one failed job per backoff step.
        failed = [
            j
            for j in status(lab)["jobs"]
            if j["volume"] == "down" and j["state"] == "failed" and j["target"] == "node2"
        ]
        assert 2 <= len(failed) <= 4, failed
    finally:
        agents.start(lab.state, node2)
        lab_state.save_state(lab.state)

    def caught_up() -> bool:
        link = schedules(lab, "down").get("node2")
        return link is not None and link["failures"] == 0 and link["last_result"] == "ok"

    wait_until("the catch-up after node2 is back", caught_up, timeout=120, interval=0.5)
    link = schedules(lab, "down")["node2"]
    assert link["last_kind"] in ("incremental", None), link  # never a full resend
    assert link["last_bytes"] < 1_500_000, link  # b.bin and what changed, not a.bin again
    # ok or behind (a loaded machine's runs can take more than an interval), not failing.
    assert ls_replicas(lab, "down")["node2"]["replication"]["state"] != "failing"
    assert lab.cli("replicate", "down", "--stop").returncode == 0


def policy_props(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    props = lab.zget(node, lab.ds(node, volume), "zflock:replicate-to", "zflock:every")
    return {k: v for k, v in props.items() if v != "-"}


def test_policy_follows_two_moves_without_a_full_resend(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "mv", "--on", "node1").returncode == 0
    lab.sh("node1", "head -c 3000000 /dev/urandom > /zflock/mv/a.bin")
    r = lab.cli("replicate", "mv", "--to", "node2,node3", "--every", f"{EVERY}s")
    assert r.returncode == 0, r.stderr

    def kept_from(primary: str, targets: set[str]) -> bool:
        links = schedules(lab, "mv")
        return set(links) == targets and all(
            s["node"] == primary and s["last_result"] == "ok" for s in links.values()
        )

    wait_until("node1's schedule to run", lambda: kept_from("node1", {"node2", "node3"}), 60)
    since = time.time()
    for old, new, targets in (("node1", "node2", "node1,node3"), ("node2", "node1", "node2,node3")):
        lab.sh(old, f"echo {new} >> /zflock/mv/moves.txt")
        r = lab.cli("move", "mv", "--to", new, "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        # The replica was warm: the pre-copy and the final delta are incremental.
        kinds = [x["kind"] for x in report["rounds"]] + [report["final"]["kind"]]
        assert set(kinds) <= {"incremental", "none"}, report
        assert report["bytes"] < 1_000_000, report
        # The policy came along with the direction switched: the old primary is a target.
        assert policy_props(lab, new, "mv") == {
            "zflock:replicate-to": targets,
            "zflock:every": f"{EVERY}s",
        }
        expected = set(targets.split(","))
        wait_until(
            f"{new}'s schedule to take over",
            lambda new=new, expected=expected: kept_from(new, expected),
            60,
        )
        for link in schedules(lab, "mv").values():
            assert link["last_kind"] in ("incremental", None), link
        # The old primary, now a replica, gets the new primary's snapshots. Read the
        # replica first: a run every EVERY s may add a snapshot to both between the
        # two reads, and one the replica holds is then on the primary already.
        received = guids(lab, old, "mv")[-1]
        assert received in guids(lab, new, "mv")
    # Not one full stream after the first sync: every job since sent a little.
    jobs = [j for j in status(lab)["jobs"] if j["volume"] == "mv" and j["started"] >= since]
    assert jobs and all(j["bytes"] < 1_000_000 for j in jobs), jobs
    assert lab.cli("replicate", "mv", "--stop").returncode == 0


def test_agent_stops_cleanly_mid_schedule_and_resumes_it_at_start(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "restart", "--on", "node1").returncode == 0
    lab.sh("node1", "head -c 2000000 /dev/urandom > /zflock/restart/a.bin")
    r = lab.cli("replicate", "restart", "--to", "node2", "--every", "1s")
    assert r.returncode == 0, r.stderr
    first = len(guids(lab, "node2", "restart"))
    wait_until(
        "scheduled syncs", lambda: len(guids(lab, "node2", "restart")) >= first + 2, timeout=60
    )
    node1 = lab.state.nodes["node1"]
    log = agents.agent_log(node1)
    seen = log.stat().st_size
    agents.stop(node1)  # SIGTERM; SIGKILL only after 10 s (the lab's shutdown_grace)
    try:
        # It ended by itself: a sync going on finished or was cancelled within the bound.
        with log.open("rb") as f:
            f.seek(seen)
            tail = f.read().decode(errors="replace")
        assert "stopped" in tail.replace("stopping", ""), tail[-2000:]
        # Whatever was cut short, the replica holds only the primary's snapshots.
        assert set(guids(lab, "node2", "restart")) <= set(guids(lab, "node1", "restart"))
    finally:
        agents.start(lab.state, node1)
        lab_state.save_state(lab.state)
    # The policy is read back from the volume at start: the schedule goes on.
    now = len(guids(lab, "node2", "restart"))
    wait_until(
        "a sync after the restart", lambda: len(guids(lab, "node2", "restart")) > now, timeout=60
    )
    assert lab.cli("replicate", "restart", "--stop").returncode == 0
