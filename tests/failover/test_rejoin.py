"""`zflock rejoin` on a real 3-node lab (issue 12, item 4; docs/failover.md, "Rejoin").

node1, the primary, is cut off while its writer runs, fences itself, node2
is failed over to and node1 comes back stale with its partition writes in a
`zflock-diverged-*` snapshot (the scenario of test_selffence.py). Then:

* bad input is refused in one line, nothing changes;
* `rejoin` keeps the diverged data first (every write node1's writer ever
  acknowledged is in the kept dataset), rolls node1 back to the common
  snapshot and catches it up **incrementally**: the bytes sent are what node2
  wrote since, not the volume;
* with no common snapshot left, `rejoin` refuses and names `--reseed`; with it,
  the old copy is kept renamed aside and the volume is copied in full.

Everything under `one_writable_copy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab
from tests.failover.test_selffence import (
    partition_and_fail_over,
    replicate,
    snapshots,
    went_stale,
)
from tests.move.conftest import Writer, assert_copies, one_writable_copy
from zflock.lab.writer import verify_data
from zflock.replication.zfs_prune import BASE_HOLD

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

VOLUME = "rj"
BULK_MIB = 8  # in the volume before the partition: what an incremental rejoin must not resend
NEW_MIB = 1  # written on the new primary: what it must send


def rejoin(lab: AgentLab, *args: str) -> dict[str, Any]:
    r = lab.cli("rejoin", VOLUME, "--json", *args)
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def refused(lab: AgentLab, code: int, text: str, *args: str) -> None:
    before = lab.zfs_state()
    r = lab.cli("rejoin", *args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert lab.zfs_state() == before


def guid(lab: AgentLab, node: str, snapshot: str) -> int:
    return int(lab.zget(node, snapshot, "guid")["guid"])


def kept_records(lab: AgentLab, dataset: str) -> bytes:
    """The writer's records file in a kept (unmounted, mountpoint=none) dataset."""
    where = f"/zflock/{VOLUME}-kept"
    lab.sh("node1", f"zfs set mountpoint={where} {dataset} && zfs mount {dataset}")
    try:
        r = lab.node_run("node1", "cat", f"{where}/records")
        assert r.returncode == 0, r.stderr
        return r.stdout.encode()
    finally:
        lab.sh("node1", f"zfs unmount {dataset} && zfs set mountpoint=none {dataset}")


def test_rejoin_keeps_the_diverged_writes_and_catches_up_incrementally(
    failover_lab: AgentLab, writer_dir: Path
) -> None:
    lab = failover_lab
    assert lab.cli("create", VOLUME, "--on", "node1").returncode == 0
    lab.sh("node1", f"dd if=/dev/urandom of=/zflock/{VOLUME}/bulk bs=1M count={BULK_MIB}")
    writer = Writer(lab, VOLUME, writer_dir)
    with one_writable_copy(lab, VOLUME):
        writer.start("node1")
        writer.wait_acked(20)
        replicate(lab, VOLUME, "node2")
        common = snapshots(lab, "node1", VOLUME)[-1]
        writer.wait_acked(writer.acked() + 20)
        try:
            partition_and_fail_over(lab, VOLUME, writer)
        finally:
            writer.stop("node1")
        went_stale(lab, VOLUME, 2)
        diverged = snapshots(lab, "node1", VOLUME)[-1]
        assert diverged.startswith("zflock-diverged-")
        diverged_guid = guid(lab, "node1", f"{lab.ds('node1', VOLUME)}@{diverged}")
        lab.sh("node2", f"dd if=/dev/urandom of=/zflock/{VOLUME}/new bs=1M count={NEW_MIB}")

        refused(lab, 2, "node2 holds the primary of rj", VOLUME, "--node", "node2")
        refused(lab, 2, "node9", VOLUME, "--node", "node9")
        refused(lab, 1, "holds no copy of nosuch", "nosuch", "--node", "node1")
        refused(lab, 1, "node3 holds no copy of rj", VOLUME, "--node", "node3")
        refused(lab, 2, "volume name", "bad/name", "--node", "node1")

        report = rejoin(lab, "--node", "node1")
        assert (report["mode"], report["common"], report["primary"]) == (
            "incremental", common, "node2",
        )  # fmt: skip
        # Incremental: about what node2 wrote since, far from the volume's size.
        assert NEW_MIB << 20 <= report["bytes"] < (BULK_MIB << 20) // 2, report
        kept = report["preserved"]
        assert kept.startswith(f"{lab.ds('node1', VOLUME)}-diverged-"), report
        # The policy is left alone; the command that would keep node1 is given.
        assert report["keep_command"] == f"zflock replicate {VOLUME} --to node1 --every INTERVAL"
        primary_policy = lab.zget("node2", lab.ds("node2", VOLUME), "zflock:replicate-to")
        assert primary_policy == {"zflock:replicate-to": "-"}
    # The kept dataset: the diverged snapshot, intact, never a copy of the volume.
    assert [guid(lab, "node1", f"{kept}@{s}") for s in snapshots_of(lab, kept)] == [diverged_guid]
    props = lab.zget(
        "node1", kept, "readonly", "mountpoint", "zflock:volume", "zflock:diverged-from"
    )
    assert props["readonly"] == "on" and props["mountpoint"] == "none", props
    assert props["zflock:volume"] == "-" and props["zflock:diverged-from"].startswith("rj/")
    # Every write node1's writer acknowledged (all before and during the partition).
    verdict = verify_data(kept_records(lab, kept), writer.acks.read_bytes())
    assert verdict.ok and verdict.acked > 40, verdict.summary()
    # node1 is an ordinary replica of node2 now, with its data.
    assert_copies(lab, VOLUME, "node2", 2, absent=("node3",))
    assert snapshots(lab, "node1", VOLUME)[-1] == snapshots(lab, "node2", VOLUME)[-1]
    assert not any(s.startswith("zflock-diverged-") for s in snapshots(lab, "node1", VOLUME))
    assert lab.checksums("node1", VOLUME) == lab.checksums("node2", VOLUME)


def snapshots_of(lab: AgentLab, dataset: str) -> list[str]:
    r = lab.node_run("node1", "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", dataset)
    return [n.split("@", 1)[1] for n in r.stdout.split() if n.startswith(dataset + "@")]


def test_without_a_common_snapshot_rejoin_refuses_and_reseed_copies_in_full(
    failover_lab: AgentLab,
) -> None:
    """Follows the test above: node1 is node2's replica. node2 drops every snapshot node1
    has: nothing in common any more."""
    lab = failover_lab
    with one_writable_copy(lab, VOLUME):
        assert lab.cli("snapshot", VOLUME).returncode == 0
        primary = lab.ds("node2", VOLUME)
        for old in snapshots(lab, "node2", VOLUME)[:-1]:
            # On OpenZFS node2 still holds its base from when it was node1's replica
            # (its own pruning would release it; this is by hand): release it first.
            # zfs-fuse has no holds, and a snapshot without one refuses the release.
            lab.sh("node2", f"zfs release {BASE_HOLD} {primary}@{old} 2>/dev/null; "
                            f"zfs destroy {primary}@{old}")  # fmt: skip
        refused(lab, 1, "--reseed", VOLUME, "--node", "node1")
        report = rejoin(lab, "--node", "node1", "--reseed")
        assert (report["mode"], report["common"]) == ("reseed", None), report
        assert report["bytes"] >= BULK_MIB << 20  # the whole volume
        kept = report["preserved"]
        assert kept.startswith(f"{lab.ds('node1', VOLUME)}-diverged-"), report
    assert_copies(lab, VOLUME, "node2", 2, absent=("node3",))
    assert snapshots(lab, "node1", VOLUME) == snapshots(lab, "node2", VOLUME)
    assert lab.checksums("node1", VOLUME) == lab.checksums("node2", VOLUME)
    assert lab.zget("node1", kept, "zflock:volume")["zflock:volume"] == "-"
