"""Self-fencing and the returning old primary on a real 3-node lab (issue 12, items 2-3).

A partition: node1, the primary, is cut off (its link down) while its writer
runs. Its agent cannot reach a majority, so within `self_fence_after` (plus a
small bound) it fences the copy itself: read-only, unmounted, labelled
`zflock:fenced`; the writer's writes fail from then on. `zflock failover` then
promotes node2. When the link comes back node1 compares epochs, sees node2's
higher one and keeps its copy fenced for good, as a stale copy, with every
write it took during the partition in a `zflock-diverged-*` snapshot.

An agent restart with its peers unreachable: the fenced copy stays fenced
(never writable) until the agent can compare epochs with every node; with no
failover in between it then unfences by itself.

Every test runs under `one_writable_copy` (all three nodes polled).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, patience, wait_until
from tests.failover.conftest import SELF_FENCE_AFTER, kill_agent, restart_agent, set_link
from tests.move.conftest import Writer, assert_copies, holding, one_writable_copy
from zflock.lab import agents
from zflock.zfs.holders import STOP_BOUND

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

# How much later than `self_fence_after` the fence may land: a ping round, the watcher's
# tick and the fence's zfs commands (zflock.cluster.lease.Timing.margin), stretched.
FENCE_BOUND = patience(10.0)
# node1 does not answer: do not wait 10 s per call for it (stretched on a slow tier,
# where an answering agent can take seconds too).
TIMEOUT = ["--timeout", f"{patience(3):g}"]


def fence_state(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    r = lab.node_run(
        node, "zfs", "get", "-H", "-p", "-o", "property,value",
        "zflock:fenced,zflock:stale,zflock:role,zflock:epoch,readonly,mounted,canmount",
        lab.ds(node, volume),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return dict(line.split("\t", 1) for line in r.stdout.splitlines())


def is_fenced(state: dict[str, str]) -> bool:
    return (
        state["zflock:fenced"].startswith("no-majority/")
        and state["zflock:role"] == "primary"
        and (state["readonly"], state["mounted"]) == ("on", "no")
    )


def snapshots(lab: AgentLab, node: str, volume: str) -> list[str]:
    dataset = lab.ds(node, volume)
    r = lab.node_run(node, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
    return [n.split("@", 1)[1] for n in r.stdout.split() if n.startswith(dataset + "@")]


def went_stale(lab: AgentLab, volume: str, epoch: int) -> None:
    """Wait until node1's copy is stale, all of it: labelled, fence label gone, unmounted
    (several zfs commands: the stale label alone is not the end state yet)."""

    def done() -> bool:
        state = fence_state(lab, "node1", volume)
        return state["zflock:stale"].startswith(f"{epoch}/failed-over/") and (
            state["zflock:fenced"],
            state["mounted"],
        ) == ("-", "no")

    wait_until("node1 to go stale", done, timeout=60, interval=0.5)


def replicate(lab: AgentLab, volume: str, to: str) -> dict[str, Any]:
    r = lab.cli("replicate", volume, "--to", to, "--json")
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def fail_over(lab: AgentLab, volume: str, to: str) -> dict[str, Any]:
    """`zflock failover VOLUME --to NODE`, retried while it says it is too soon."""
    report: dict[str, Any] = {}

    def done() -> bool:
        r = lab.cli("failover", volume, "--to", to, "--json", *TIMEOUT)
        if r.returncode == 0:
            report.update(json.loads(r.stdout))
            return True
        assert any(w in r.stderr for w in ("left", "still answers", "try again")), r.stderr
        return False

    wait_until("the failover to be allowed", done, timeout=120, interval=1)
    return report


def partition_and_fail_over(lab: AgentLab, volume: str, writer: Writer) -> dict[str, Any]:
    """node1 (primary, writer running, replicated to node2) is cut off, fences itself,
    node2 is promoted, the link comes back and node1's copy goes stale. Returns what the
    test checks: acknowledgements at the fence, the failover report, the fence time."""
    set_link(lab, "node1", up=False)
    cut = time.monotonic()
    try:
        wait_until(
            "node1 to fence itself",
            lambda: is_fenced(fence_state(lab, "node1", volume)),
            timeout=(SELF_FENCE_AFTER + FENCE_BOUND) / patience(1),
            interval=0.2,
        )
        fenced_after = time.monotonic() - cut
        # Fenced: no write succeeds any more (the writer keeps trying).
        acked = writer.acked()
        time.sleep(patience(2))
        assert writer.acked() == acked
        report = fail_over(lab, volume, "node2")
    finally:
        set_link(lab, "node1", up=True)
    return {"acked": acked, "failover": report, "fenced_after": fenced_after}


def test_a_cut_off_primary_fences_itself_and_returns_stale(
    failover_lab: AgentLab, writer_dir: Path
) -> None:
    lab = failover_lab
    volume = "part"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    writer = Writer(lab, volume, writer_dir)
    with one_writable_copy(lab, volume):
        writer.start("node1")
        writer.wait_acked(20)
        replicate(lab, volume, "node2")
        common = snapshots(lab, "node1", volume)[-1]
        replicated = writer.acked()
        writer.wait_acked(replicated + 20)  # written after the last common snapshot
        try:
            seen = partition_and_fail_over(lab, volume, writer)
        finally:
            writer.stop("node1")
        assert seen["fenced_after"] < SELF_FENCE_AFTER + FENCE_BOUND
        epoch = seen["failover"]["epoch"]
        assert seen["failover"]["node"] == "node2" and epoch == 2
        # Back in contact: node1 sees epoch 2 on node2 and keeps its copy fenced, stale.
        went_stale(lab, volume, epoch)
    assert_copies(lab, volume, "node2", epoch, stale={"node1": epoch}, absent=("node3",))
    state = fence_state(lab, "node1", volume)
    assert state["zflock:fenced"] == "-" and state["zflock:epoch"] == "1"
    # Its partition writes are kept: a diverged snapshot after the common one.
    after = snapshots(lab, "node1", volume)
    diverged = [s for s in after if s.startswith("zflock-diverged-")]
    assert len(diverged) == 1 and after.index(diverged[0]) > after.index(common), after
    assert seen["acked"] > replicated
    # zflock ls names the stale copy and the epoch it lost to; --json carries the label.
    r = lab.cli("ls", volume)
    assert r.returncode == 0, r.stderr
    assert "node1" in r.stderr and f"lost to epoch {epoch}" in r.stderr, r.stderr
    r = lab.cli("ls", volume, "--json")
    copies = {c["node"]: c for c in json.loads(r.stdout)["volumes"][0]["copies"]}
    assert copies["node1"]["stale"].startswith(f"{epoch}/failed-over/"), copies


@pytest.mark.parametrize("through", ["its mount", "a bind mount"])
def test_a_cut_off_primary_stops_a_consumer_still_holding_a_file(
    failover_lab: AgentLab, through: str
) -> None:
    """On zfs-fuse `readonly=on` does not stop a write through a file opened before it
    (tests/zfs/test_contract.py), through the volume's mount or another mount of it (a
    container's bind mount, which does not even make the unmount busy). So the fence
    stops every process holding a file on it open for writing (`[failover]
    stop_holders`, on by default), and the failover's margin counts that time
    (cluster/lease.py, fence_time). Back in contact with no failover in between, the
    copy unfences, mounted where it belongs, with every line the holder wrote."""
    lab = failover_lab
    volume = "held" if through == "its mount" else "bound"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    where = f"/zflock/{volume}"
    bind = f"/mnt/zflock-test-{volume}"
    if through == "a bind mount":
        lab.sh("node1", f"mkdir -p {bind} && mount --bind {where} {bind}")
        where = bind
    try:
        with holding(lab, "node1", f"{where}/held.log") as holder, one_writable_copy(lab, volume):
            assert holder.write("before the cut") == "ok"
            try:
                set_link(lab, "node1", up=False)
                wait_until(
                    "node1 to fence itself and stop the holder",
                    lambda: (
                        holder.proc.poll() is not None
                        and fence_state(lab, "node1", volume)["zflock:fenced"].startswith(
                            "no-majority/"
                        )
                    ),
                    timeout=(SELF_FENCE_AFTER + FENCE_BOUND + STOP_BOUND) / patience(1),
                    interval=0.2,
                )
                if through == "its mount":
                    wait_until(
                        "node1's copy to be unmounted",
                        lambda: is_fenced(fence_state(lab, "node1", volume)),
                        timeout=30,
                        interval=0.2,
                    )
            finally:
                if through == "a bind mount":
                    lab.sh("node1", f"umount {bind} && rmdir {bind}")  # made here, by name
                set_link(lab, "node1", up=True)
            wait_until(
                "node1 to unfence",
                lambda: fence_state(lab, "node1", volume)["zflock:fenced"] == "-",
                timeout=60,
                interval=0.5,
            )
    finally:
        lab.node_run("node1", "sh", "-c", f"umount {bind} 2>/dev/null; rmdir {bind} 2>/dev/null")
    assert_copies(lab, volume, "node1", 1, absent=("node2", "node3"))
    assert lab.sh("node1", f"cat /zflock/{volume}/held.log") == "held\nbefore the cut\n"
    # Mounted where it belongs (not just said to be: zfs-fuse can believe a filesystem
    # mounted that only a bind mount held), and writable.
    lab.sh("node1", f"mountpoint -q /zflock/{volume} && echo after > /zflock/{volume}/after.txt")
    log = agents.agent_log(lab.state.nodes["node1"]).read_text(errors="replace")
    assert "fenced, but still open for writing" in log and f"{holder.proc.pid} (" in log


def test_a_restarted_agent_without_peers_stays_fenced_until_it_compares_epochs(
    failover_lab: AgentLab,
) -> None:
    lab = failover_lab
    volume = "alone"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    lab.sh("node1", f"echo before > /zflock/{volume}/f")
    peers = ("node2", "node3")
    with one_writable_copy(lab, volume):
        try:
            for node in peers:  # node1 stays reachable from the host, not from its peers
                set_link(lab, node, up=False)
            wait_until(
                "node1 to fence itself",
                lambda: is_fenced(fence_state(lab, "node1", volume)),
                timeout=(SELF_FENCE_AFTER + FENCE_BOUND) / patience(1),
                interval=0.2,
            )
            label = fence_state(lab, "node1", volume)["zflock:fenced"]
            kill_agent(lab, "node1")
            restart_agent(lab, "node1")
            # `zflock ls` shows the fenced copy and why (node2, node3 cannot answer).
            r = lab.cli("ls", volume, *TIMEOUT)
            assert "cut off from a majority" in r.stdout, (r.stdout, r.stderr)
            r = lab.cli("ls", volume, "--json", *TIMEOUT)
            listed = json.loads(r.stdout)["volumes"][0]["copies"][0]
            assert listed["fenced"].startswith("no-majority/"), listed
            # Several lease periods with no peer: it never unfences. The label is the one
            # written before the restart: an unfence clears it, a new fence writes a new one.
            deadline = time.monotonic() + 3 * SELF_FENCE_AFTER
            while time.monotonic() < deadline:
                state = fence_state(lab, "node1", volume)
                assert is_fenced(state) and state["zflock:fenced"] == label, state
                time.sleep(0.5)
        finally:
            for node in peers:
                set_link(lab, node, up=True)
        # Peers back, no failover happened: no higher epoch anywhere, so it unfences.
        wait_until(
            "node1 to unfence",
            lambda: fence_state(lab, "node1", volume)["zflock:fenced"] == "-",
            timeout=60,
            interval=0.5,
        )
    assert_copies(lab, volume, "node1", 1, absent=("node2", "node3"))
    assert lab.sh("node1", f"cat /zflock/{volume}/f").strip() == "before"
    lab.sh("node1", f"echo after > /zflock/{volume}/f")  # writable again
