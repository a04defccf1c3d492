"""`zflock move` between real agents: data under a writer, epochs, fencing, bad input.

Every move runs under `one_writable_copy`, which polls both nodes for the
whole test: at no moment may two copies be writable and mounted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, patience, wait_until
from tests.move.conftest import (
    Writer,
    assert_copies,
    copy_state,
    move,
    moved,
    one_writable_copy,
    start_move,
)

pytestmark = pytest.mark.lab


def create_with_data(lab: AgentLab, volume: str, mib: int = 4) -> None:
    r = lab.cli("create", volume, "--on", "node1")
    assert r.returncode == 0, r.stderr
    lab.sh("node1", f"head -c {mib << 20} /dev/urandom > /zflock/{volume}/data.bin")


def assert_primary(lab: AgentLab, volume: str, node: str, epoch: int) -> None:
    state = copy_state(lab, node, volume)
    assert state["zflock:role"] == "primary", state
    assert state["zflock:epoch"] == str(epoch), state
    assert (state["readonly"], state["mounted"]) == ("off", "yes"), state
    assert state["zflock:move"] == "-", state


def assert_fenced_replica(lab: AgentLab, volume: str, node: str) -> None:
    state = copy_state(lab, node, volume)
    assert state["zflock:role"] == "replica", state
    assert (state["readonly"], state["mounted"]) == ("on", "no"), state
    assert state["zflock:move"] == "-", state


def test_move_under_a_writer_loses_no_acknowledged_write(
    agent_lab: AgentLab, writer_dir: Path
) -> None:
    lab = agent_lab
    create_with_data(lab, "db", mib=8)
    writer = Writer(lab, "db", writer_dir)
    before = lab.checksums("node1", "db")["./data.bin"]
    with one_writable_copy(lab, "db"):
        writer.start("node1")
        writer.wait_acked(50)
        report = moved(lab, "db", "node2", *writer.hooks())
        writer.wait_acked(writer.acked() + 20)  # the writer runs again, on node2
        writer.stop("node2")
    assert (report["from"], report["to"], report["epoch"], report["result"]) == (
        "node1", "node2", 2, "moved",
    )  # fmt: skip
    rounds = report["rounds"]
    assert isinstance(rounds, list) and rounds[0]["kind"] == "full"
    assert rounds[0]["bytes"] >= 8 << 20
    assert 0 < float(report["downtime_s"]) <= float(report["total_s"])  # type: ignore[arg-type]
    assert set(report["cutover"]) >= {"fence", "final delta", "verify", "promote"}  # type: ignore[arg-type]
    summary = writer.verify_on("node2")
    assert summary["records"] >= summary["acked"]
    assert lab.checksums("node2", "db")["./data.bin"] == before
    assert_primary(lab, "db", "node2", 2)
    assert_fenced_replica(lab, "db", "node1")
    assert_copies(lab, "db", "node2", 2)


def test_there_and_back_ten_times_epoch_rises_by_one(agent_lab: AgentLab, writer_dir: Path) -> None:
    lab = agent_lab
    create_with_data(lab, "ping", mib=2)
    writer = Writer(lab, "ping", writer_dir)
    downtimes = []
    with one_writable_copy(lab, "ping") as watch:
        writer.start("node1")
        writer.wait_acked(20)
        here, there = "node1", "node2"
        for i in range(10):
            acked = writer.acked()
            report = moved(lab, "ping", there, *writer.hooks())
            assert report["epoch"] == i + 2
            downtimes.append(report["downtime_s"])
            writer.wait_acked(acked + 10)  # writing again, on the new primary
            writer.verify_on(there)
            assert_primary(lab, "ping", there, i + 2)
            assert_fenced_replica(lab, "ping", here)
            assert_copies(lab, "ping", there, i + 2)
            here, there = there, here
        writer.stop(here)
    print(f"\n10 moves, downtimes {downtimes}, {watch.samples} invariant samples")
    writer.verify_on(here)
    # Later moves only send deltas: the replica left behind makes the way back cheap.
    assert all(r["kind"] != "full" for r in report["rounds"])  # type: ignore[union-attr,index]


def test_dry_run_changes_nothing_and_destroy_source(agent_lab: AgentLab) -> None:
    lab = agent_lab
    create_with_data(lab, "dry", mib=1)
    before = lab.zfs_state()
    r = move(lab, "dry", "node2", "--dry-run")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["result"] == "planned" and plan["epoch"] == 1
    assert any("full send" in line for line in plan["plan"])
    assert lab.zfs_state() == before
    report = moved(lab, "dry", "node2", "--destroy-source")
    assert report["epoch"] == 2
    assert lab.ds("node1", "dry") not in lab.datasets("node1")
    assert_primary(lab, "dry", "node2", 2)
    assert_copies(lab, "dry", "node2", 2, absent=("node1",))


def test_bad_input_is_refused_and_changes_nothing(agent_lab: AgentLab) -> None:
    lab = agent_lab
    create_with_data(lab, "bad", mib=1)
    before = lab.zfs_state()
    cases = [
        (["move", "nosuch", "--to", "node2"], 1, "not found"),
        (["move", "bad", "--to", "node9"], 2, "unknown node"),
        (["move", "bad", "--to", "node1"], 1, "already on node1"),
        (["move", "bad;rm -rf /", "--to", "node2"], 2, "invalid"),
        (["move", "bad", "--to", "node2;x"], 2, "invalid node name"),
        (["move", "bad", "--to", "node2", "--max-downtime", "0"], 2, "max-downtime"),
        (["move", "bad", "--to", "node2", "--pre-hook", ""], 2, "empty command"),
        (["move", "bad", "--to", "node2", "--pre-hook", "'unbalanced"], 2, "--pre-hook"),
        (["move", "bad", "--to", "node2", "--max-rounds", "0"], 2, "max-rounds"),
    ]
    for args, code, words in cases:
        r = lab.cli(*args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert lab.zfs_state() == before


def running_jobs(lab: AgentLab, volume: str) -> list[dict[str, object]]:
    r = lab.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    jobs = json.loads(r.stdout)["jobs"]
    return [j for j in jobs if j["volume"] == volume and j["state"] == "running"]


def test_a_second_move_of_the_same_volume_is_refused(agent_lab: AgentLab) -> None:
    lab = agent_lab
    create_with_data(lab, "busy", mib=1)
    flag = Path(f"/tmp/zflock-test-busy-{lab.state.name}")
    started = flag.with_name(flag.name + "-hook")
    # The first move's pre-hook says it runs, then waits until the test lets it go:
    # from then on nothing changes (pre-copy is over, fencing comes after the hook).
    hook = f"sh -c 'touch {started}; while [ ! -e {flag} ]; do sleep 0.05; done'"
    first = start_move(lab, "busy", "node2", "--pre-hook", hook)
    try:
        wait_until("the first move's pre-hook", started.exists)
        assert running_jobs(lab, "busy")
        before = lab.zfs_state()
        r = move(lab, "busy", "node2")
        assert r.returncode == 1, r.stdout
        assert "busy" in r.stderr and "move to node2" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert lab.zfs_state() == before
    finally:
        flag.touch()
        out, err = first.communicate(timeout=patience(120))
        flag.unlink()
        started.unlink(missing_ok=True)
    assert first.returncode == 0, err
    assert json.loads(out)["epoch"] == 2
    assert_copies(lab, "busy", "node2", 2)


def test_diverged_destination_is_refused(agent_lab: AgentLab) -> None:
    lab = agent_lab
    create_with_data(lab, "div", mib=1)
    assert lab.cli("replicate", "div", "--to", "node2").returncode == 0
    # An operator snapshot on the replica: the destination has history the source lacks.
    lab.sh("node2", f"zfs snapshot {lab.ds('node2', 'div')}@operator")
    before = lab.zfs_state()
    r = move(lab, "div", "node2")
    assert r.returncode == 1
    assert "operator" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert lab.zfs_state() == before


def test_not_enough_space_on_the_destination(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "ballast", "--on", "node2").returncode == 0
    lab.sh("node2", "dd if=/dev/zero of=/zflock/ballast/fill bs=1M count=700 2>/dev/null")
    assert lab.cli("create", "fat", "--on", "node1").returncode == 0
    lab.sh("node1", "dd if=/dev/zero of=/zflock/fat/fill bs=1M count=300 2>/dev/null")
    # Space shows in `referenced` once ZFS has synced the transaction group.
    for node, volume, mib in (("node2", "ballast", 700), ("node1", "fat", 300)):
        dataset = lab.ds(node, volume)
        wait_until(
            f"{dataset} to show its {mib} MiB",
            lambda n=node, d=dataset, size=mib << 20: (
                int(lab.zget(n, d, "referenced")["referenced"]) >= size
            ),
            interval=0.5,
        )
    before = lab.zfs_state()
    r = move(lab, "fat", "node2")
    assert r.returncode == 1
    assert "not enough space on node2" in r.stderr
    assert lab.zfs_state() == before
    assert lab.cli("destroy", "ballast").returncode == 0
    assert lab.cli("destroy", "fat").returncode == 0
