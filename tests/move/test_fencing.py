"""The fencing rule on three nodes: late, lost and repeated answers never make two writers.

Each test builds one of the interleavings of issue 10 with real agents on a
3-node lab: a promote answer lost because the source's link went down right
after the destination promoted, moves that go on while the source is cut
off, a destination copy that is invisible when it is asked, a move marker
older than the copy carrying it. Individual `resolve_move` requests are sent
straight to an agent where a test needs an exact late or repeated message.
Every test runs under `one_writable_copy` (all three nodes polled) and ends
with `assert_copies` (the full state of every copy). docs/move.md, "The
fencing rule", says what each scenario must end in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from tests.move.conftest import (
    Holder,
    Writer,
    assert_copies,
    copy_state,
    holding,
    move,
    moved,
    one_writable_copy,
    start_move,
)
from zflock.cli.common import load_cluster
from zflock.lab import agents
from zflock.rpc import messages as m

# Each test waits out SSH keepalives and the recovery loop's back-off on purpose.
pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def lab3() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=3, pool_size=1 << 30) as lab:
        yield lab


def rpc(lab: AgentLab, node: str, op: str, args: Any) -> Any:
    """One request to one agent, as a peer would send it (the lab's key is authorized)."""
    cluster = load_cluster(lab.cluster_file, None)
    return asyncio.run(cluster.call(node, op, args))


def resolve(lab: AgentLab, node: str, volume: str, move_id: str, epoch: int) -> str:
    """A (late) `resolve_move` for `move_id` to `node`: its answer."""
    vid = copy_state(lab, "node1", volume)["zflock:id"]
    args = m.ResolveMove(name=volume, volume_id=vid, move_id=move_id, epoch=epoch)
    answer: m.MoveResolution = rpc(lab, node, "resolve_move", args)
    return answer.status


def link(lab: AgentLab, node: str, *, up: bool) -> None:
    veth = lab.state.nodes[node].host_veth
    subprocess.run(["ip", "link", "set", veth, "up" if up else "down"], check=True)


def move_losing_the_answer(lab: AgentLab, volume: str) -> str:
    """Move `volume` node1 -> node2 so that node2 promotes but its answer never reaches
    node1: node2's post-cutover hook takes node1's link down (from the host's network
    namespace). node1 is left fenced with its marker at `promoting`, its agent retrying
    in the background. Returns the move id. The caller brings the link back up."""
    veth = lab.state.nodes["node1"].host_veth
    cut = f"nsenter --net=/proc/{os.getpid()}/ns/net ip link set {veth} down"
    proc = start_move(lab, volume, "node2", "--post-hook", cut)
    try:
        wait_until(
            "node2 to promote itself",
            lambda: copy_state(lab, "node2", volume).get("mounted") == "yes",
            timeout=120,
        )
    finally:
        # The CLI follows the job on node1 over the link just cut: it has nothing to say.
        proc.kill()
        proc.communicate(timeout=patience(30))
    s = copy_state(lab, "node1", volume)
    assert (s["readonly"], s["zflock:role"]) == ("on", "primary"), s
    assert s["zflock:move"].startswith("promoting/"), s
    # Lost for good only once node1's move gave up on it (SSH keepalives, then settling
    # with an unreachable node2): a link back up sooner would let TCP deliver it late.
    log = agents.agent_log(lab.state.nodes["node1"])
    wait_until(
        "node1's move to give up on the lost answer",
        lambda: any(f"volume={volume} " in line and "move: failed" in line
                    for line in log.read_text().splitlines()),
        timeout=150, interval=0.5,
    )  # fmt: skip
    s = copy_state(lab, "node1", volume)
    assert (s["readonly"], s["zflock:move"].split("/")[0]) == ("on", "promoting"), s
    return s["zflock:move"].split("/")[1]


def restart_agent(lab: AgentLab, node: str) -> None:
    """SIGKILL the node's agent and start it again (it recovers interrupted moves)."""
    lab.kill_agent(node)
    agents.start(lab.state, lab.state.nodes[node])


def settled(lab: AgentLab, node: str, volume: str) -> None:
    """Wait for `node`'s recovery to settle its interrupted move (its marker gone)."""
    wait_until(
        f"{node}'s recovery to settle the move",
        lambda: copy_state(lab, node, volume).get("zflock:move") == "-",
        timeout=150,
        interval=0.5,
    )


@pytest.mark.parametrize(
    "later", [("node3",), ("node3", "node2")], ids=["moved-on", "promoted-again"]
)
def test_a_late_resolve_after_the_volume_moved_on_leaves_the_source_stale(
    lab3: AgentLab, later: tuple[str, ...]
) -> None:
    """Issue 10, scenarios 1 and 2: node1 -> node2 (answer lost, node1 cut off), then
    node2 -> node3 (and node3 -> node2); node1's link comes back and its recovery asks
    node2 about the first move. node2 must not become writable again beside node3
    (scenario 1), node1 must not unfence beside node2 (scenario 2): node1 ends stale."""
    lab = lab3
    volume = f"late{len(later)}"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    with one_writable_copy(lab, volume):
        try:
            move_losing_the_answer(lab, volume)
            for to in later:
                moved(lab, volume, to)
        finally:
            link(lab, "node1", up=True)
        settled(lab, "node1", volume)
    states = assert_copies(lab, volume, later[-1], 2 + len(later), stale={"node1": 2})
    assert states["node1"]["zflock:epoch"] == "1"
    # `zflock ls` names the stale copy, the epoch it lost to and why.
    r = lab.cli("ls", volume)
    assert r.returncode == 0, r.stderr
    assert "node1" in r.stderr and "stale" in r.stderr, r.stderr


def rename_when_not_busy(lab: AgentLab, node: str, old: str, new: str) -> None:
    """`zfs rename`, retried while zfs-fuse still calls a just-unmounted dataset busy
    (LAB.md: about a second after an unmount)."""

    def renamed() -> bool:
        r = lab.node_run(node, "zfs", "rename", old, new)
        assert r.returncode == 0 or "busy" in r.stderr, f"{node}: zfs rename: {r.stderr}"
        return r.returncode == 0

    wait_until(f"{old} renamed to {new} on {node}", renamed, timeout=30, interval=0.5)


def test_an_invisible_destination_keeps_the_source_fenced(lab3: AgentLab) -> None:
    """Issue 10, scenario 3: node2 promoted, but its dataset is renamed away when node1
    asks. "Absent" proves nothing: the answer is `unknown`, node1 stays fenced; once the
    copy is back, the move settles as promoted (and node2 finishes its promotion)."""
    lab = lab3
    volume = "hidden"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    there, away = lab.ds("node2", volume), f"{lab.ds('node2')}-away-{volume}"
    with one_writable_copy(lab, volume):
        try:
            move_id = move_losing_the_answer(lab, volume)
            # zfs-fuse renames only an unmounted dataset; the settled promotion mounts it again.
            lab.sh("node2", f"zfs unmount {there}")
            rename_when_not_busy(lab, "node2", there, away)
        finally:
            link(lab, "node1", up=True)
        try:
            assert resolve(lab, "node2", volume, move_id, 2) == "unknown"
            s = copy_state(lab, "node1", volume)
            assert (s["readonly"], s["zflock:move"]) == ("on", f"promoting/{move_id}/node2/2"), s
        finally:
            rename_when_not_busy(lab, "node2", away, there)
        settled(lab, "node1", volume)
    assert_copies(lab, volume, "node2", 2, absent=("node3",))


def test_a_marker_older_than_the_copy_is_retired(lab3: AgentLab) -> None:
    """Issue 10, scenarios 4 and 1 (on the destination): node1 -> node2 (move A), then
    node2 -> node1 (epoch 3). A marker of move A left on node1 is retired by recovery
    (node1 stays the primary, node2 is not asked), and a late resolve of A on node2
    (demoted since) answers `superseded` without making node2 writable."""
    lab = lab3
    volume = "oldmark"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    with one_writable_copy(lab, volume):
        a = str(moved(lab, volume, "node2")["move_id"])
        moved(lab, volume, "node1")
        # The marker a demotion of move A leaves when it is cut short before its last
        # step (the window is one zfs command wide, so it is written here by hand).
        lab.sh("node1", f"zfs set zflock:move=promoting/{a}/node2/2 {lab.ds('node1', volume)}")
        restart_agent(lab, "node1")
        settled(lab, "node1", volume)
        assert resolve(lab, "node2", volume, a, 2) == "superseded"
        # Asked again (a repeated message): the same answer, nothing changes.
        assert resolve(lab, "node2", volume, a, 2) == "superseded"
    assert_copies(lab, volume, "node1", 3, absent=("node3",))


def test_a_writer_left_running_through_the_cutover_loses_nothing(
    lab3: AgentLab, writer_dir: Path
) -> None:
    """No pre-cutover hook stops the consumer: it keeps writing until the fence makes
    its writes fail. The final snapshot is taken after the fence, so every write that
    reached the source (acknowledged or not) is on the destination: the old source's
    files equal the new primary's, byte for byte."""
    lab = lab3
    volume = "unstopped"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    writer = Writer(lab, volume, writer_dir)
    with one_writable_copy(lab, volume):
        writer.start("node1")
        writer.wait_acked(50)
        try:
            assert moved(lab, volume, "node2")["epoch"] == 2
        finally:
            writer.stop("node1")
    writer.verify_on("node2")
    assert lab.checksums("node1", volume) == lab.checksums("node2", volume)
    assert_copies(lab, volume, "node2", 2, absent=("node3",))


def refused_and_rolled_back(lab: AgentLab, volume: str, holder: Holder) -> None:
    """A move of `volume` from node1 while `holder` still writes to it: refused at the
    fence, naming the writer, and rolled back (the full state of every copy checked);
    the holder's descriptor writes again after the rollback."""
    r = move(lab, volume, "node2")
    assert r.returncode == 1, r.stderr
    assert "still open for writing after fencing, by " in r.stderr, r.stderr
    assert "rolled back; the source is writable again" in r.stderr, r.stderr
    assert_copies(lab, volume, "node1", 1, absent=("node3",))
    assert holder.write("after the rollback") == "ok"


def test_a_consumer_still_holding_a_file_makes_the_cutover_roll_back(lab3: AgentLab) -> None:
    """`readonly=on` does not stop a write through a descriptor opened before it (on
    zfs-fuse it succeeds, fsync and all: tests/zfs/test_contract.py), so a source that
    cannot be unmounted after the fence could take acknowledged writes after the final
    snapshot. The fence refuses it: the move rolls back before the destination is asked,
    and every write the holder made is where the volume goes next."""
    lab, volume = lab3, "held"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    path = f"/zflock/{volume}/held.log"
    with holding(lab, "node1", path) as holder, one_writable_copy(lab, volume):
        refused_and_rolled_back(lab, volume, holder)
    # Nothing holds it now: the same move succeeds, with every write on node2.
    with one_writable_copy(lab, volume):
        assert moved(lab, volume, "node2")["epoch"] == 2
    got = lab.node_run("node2", "cat", path)
    assert got.returncode == 0 and got.stdout == "held\nafter the rollback\n", got
    assert_copies(lab, volume, "node2", 2, absent=("node3",))


def test_a_consumer_writing_through_another_mount_makes_the_cutover_roll_back(
    lab3: AgentLab,
) -> None:
    """A container sees its volume through a bind mount in its own mount namespace.
    A file held open for writing through such a mount does not make the source's
    unmount busy on zfs-fuse, and its writes still reach the dataset after the
    unmount (tried 2026-12-05): the fence finds the writer by device and refuses, before
    the unmount (after it, zfs-fuse would read the source as mounted while its own
    mountpoint is empty, and the rollback would not mount it again)."""
    lab, volume = lab3, "bound"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    bind = f"/mnt/zflock-test-{volume}"
    lab.sh("node1", f"mkdir -p {bind} && mount --bind /zflock/{volume} {bind}")
    try:
        with holding(lab, "node1", f"{bind}/held.log") as holder, one_writable_copy(lab, volume):
            refused_and_rolled_back(lab, volume, holder)
            lab.sh("node1", f"echo direct > /zflock/{volume}/direct.txt")
    finally:
        lab.sh("node1", f"umount {bind} && rmdir {bind}")  # the mount it made, by name
    with one_writable_copy(lab, volume):
        assert moved(lab, volume, "node2")["epoch"] == 2
    got = lab.node_run("node2", "cat", f"/zflock/{volume}/held.log", f"/zflock/{volume}/direct.txt")
    assert got.returncode == 0 and got.stdout == "held\nafter the rollback\ndirect\n", got
    assert_copies(lab, volume, "node2", 2, absent=("node3",))
