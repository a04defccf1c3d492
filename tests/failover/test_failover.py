"""`zflock failover` on a real 3-node lab (issue 12, item 1; docs/failover.md).

The primary's node dies while a writer runs and the volume is replicated by
repeated `zflock replicate`: its link goes down and its agent is SIGKILLed.
The freshest replica is promoted once the old primary has been unreachable
for `self_fence_after` + margin, every write acknowledged before the last
replicated snapshot is on it, and the loss window printed is that
snapshot's age. Every refusal on the way (primary alive, a staler `--to`,
too soon, bad input, nothing to promote) is one line and changes nothing.
Two writable copies at any moment fail the test (`one_writable_copy`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, patience, wait_until
from tests.failover.conftest import kill_agent, set_link
from tests.move.conftest import Writer, copy_state, one_writable_copy
from zflock.lab import agents
from zflock.lab.writer import verify_data

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

VOLUME = "fo"
# node1 does not answer: do not wait 10 s per call for it (stretched on a slow tier,
# where an answering agent can take seconds too).
TIMEOUT = ["--timeout", f"{patience(3):g}"]


def replicate(lab: AgentLab, volume: str, to: str) -> dict[str, Any]:
    r = lab.cli("replicate", volume, "--to", to, "--json")
    assert r.returncode == 0, r.stderr
    report: dict[str, Any] = json.loads(r.stdout)
    return report


def refused(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """A one-line error on stderr naming what was wrong, exit `code`, nothing on stdout."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert text in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def die(lab: AgentLab, node: str, writer: Writer) -> None:
    """The node dies: its link goes down, its agent and its writer are SIGKILLed. A dead
    host serves nothing, but the lab's pool outlives the node's processes: its copy is
    made read-only and unmounted by hand, as the power cut would have left it."""
    set_link(lab, node, up=False)
    kill_agent(lab, node)
    os.kill(int(writer.pidfile.read_text().split()[0]), signal.SIGKILL)
    dataset = lab.ds(node, VOLUME)
    lab.sh(node, f"zfs set readonly=on {dataset} && zfs unmount {dataset}")


def test_the_freshest_replica_takes_over_a_dead_primary(
    failover_lab: AgentLab, writer_dir: Path
) -> None:
    lab = failover_lab
    assert lab.cli("create", VOLUME, "--on", "node1").returncode == 0
    assert lab.cli("create", "folone", "--on", "node1").returncode == 0  # never replicated
    writer = Writer(lab, VOLUME, writer_dir)
    hook_file = writer_dir / "post-hook"
    hook = f"sh -c 'echo $ZFLOCK_EPOCH $ZFLOCK_DESTINATION > {hook_file}'"
    with one_writable_copy(lab, VOLUME):
        writer.start("node1")
        writer.wait_acked(20)
        # A policy on the primary (its schedule too slow to run in this test): every
        # sync gives each replica a copy, so it follows the failover (docs/failover.md).
        r = lab.cli("replicate", VOLUME, "--to", "node2,node3", "--every", "7d")
        assert r.returncode == 0, r.stderr
        for _ in range(2):
            replicate(lab, VOLUME, "node2")
            replicate(lab, VOLUME, "node3")
        # The last round goes to node2 only: node2 is the freshest, node3 a round behind.
        writer.wait_acked(writer.acked() + 10)
        acked_before_last = writer.acked()
        last = replicate(lab, VOLUME, "node2")
        writer.wait_acked(writer.acked() + 10)  # written after it: these are lost

        # The primary answers: refused, pointing to `zflock move`; nothing changes.
        before = lab.zfs_state()
        refused(lab.cli("failover", VOLUME), 1, f"use `zflock move {VOLUME} --to NODE`")
        assert lab.zfs_state() == before

        die(lab, "node1", writer)
        try:
            before = lab.zfs_state()
            # Too soon: the old primary may not have fenced itself yet; the time left shown.
            refused(lab.cli("failover", VOLUME, *TIMEOUT), 1, "s left (--force skips this wait")
            # A staler replica while a newer one is reachable (checked before the wait).
            refused(
                lab.cli("failover", VOLUME, "--to", "node3", *TIMEOUT), 1,
                "node2 holds a newer snapshot",
            )  # fmt: skip
            # Bad input: the dead primary as target, an unknown node, an unknown volume,
            # an invalid name, a volume only the dead node held.
            refused(lab.cli("failover", VOLUME, "--to", "node1", *TIMEOUT), 1,
                    "node node1 did not answer")  # fmt: skip
            refused(lab.cli("failover", VOLUME, "--to", "node9", *TIMEOUT), 2, "node9")
            refused(lab.cli("failover", "nosuch", *TIMEOUT), 1, "volume nosuch not found")
            refused(lab.cli("failover", "bad/name", *TIMEOUT), 2, "volume name")
            refused(lab.cli("failover", "folone", *TIMEOUT), 1, "unreachable: node1")
            assert lab.zfs_state() == before

            outcome: dict[str, Any] = {}

            def failed_over() -> bool:
                r = lab.cli("failover", VOLUME, "--json", "--post-hook", hook, *TIMEOUT)
                if r.returncode == 0:
                    outcome.update(json.loads(r.stdout))
                    return True
                # Only ever refused for the wait (or a round a node answered too slowly).
                assert "s left" in r.stderr or "try again" in r.stderr, r.stderr
                return False

            wait_until("the failover to be allowed", failed_over, timeout=120, interval=1)
        finally:
            set_link(lab, "node1", up=True)
        report = outcome
        assert (report["node"], report["epoch"], report["unreachable"]) == ("node2", 2, ["node1"])
        assert report["forced"] == [] and report["hook_errors"] == []
        # The policy followed, from a copy of serial 1 (set once): the new primary keeps
        # node3 and not itself; the dead node1 is not added back. node2's and node3's
        # copies are the same change; which one is named depends on when each was last
        # rewritten (a copy is rewritten only when it changed or is a minute old).
        assert report["policy"]["targets"] == ["node3"] and report["policy"]["every"] == "1w"
        assert report["policy_from"] in ("node2", "node3") and report["policy_serial"] == 2
        assert report["old_primary"] == "node1"  # the sender of that copy, unreachable
        assert not any("could not ask" in w for w in report["warnings"])
        # The newest snapshot node2 had, the last one replicated to it.
        assert (report["snapshot"], report["snapshot_guid"]) == (last["snapshot"], last["guid"])
        # The loss window is that snapshot's age when node2 became writable.
        snapshot = f"{lab.ds('node2', VOLUME)}@{report['snapshot']}"
        creation = int(lab.zget("node2", snapshot, "creation")["creation"])
        assert report["snapshot_time"] == creation
        assert abs(report["loss_window_s"] - (report["promoted_at"] - creation)) < 0.01
        assert report["loss_window_s"] > 0
        # Post-cutover hooks ran on the new primary, as after a move.
        assert hook_file.read_text().split() == ["2", "node2"]

        # node2 is the writable primary at epoch 2; node3 a read-only replica.
        s2, s3 = copy_state(lab, "node2", VOLUME), copy_state(lab, "node3", VOLUME)
        assert (s2["zflock:role"], s2["zflock:epoch"], s2["readonly"], s2["mounted"]) == (
            "primary", "2", "off", "yes",
        )  # fmt: skip
        assert s2["zflock:promoted-by"].endswith("/2")
        stored = lab.zget("node2", lab.ds("node2", VOLUME), "zflock:replicate-to",
                          "zflock:every", "zflock:policy-serial")  # fmt: skip
        assert stored == {"zflock:replicate-to": "node3", "zflock:every": "1w",
                          "zflock:policy-serial": "2"}  # fmt: skip
        assert (s3["zflock:role"], s3["readonly"], s3["mounted"]) == ("replica", "on", "no")

        # Every write acknowledged before the last replicated snapshot is on node2.
        acks = b"".join(writer.acks.read_bytes().splitlines(keepends=True)[:acked_before_last])
        records = lab.node_run("node2", "cat", writer.records)
        assert records.returncode == 0, records.stderr
        verdict = verify_data(records.stdout.encode(), acks)
        assert verdict.ok and verdict.acked == acked_before_last, verdict.summary()

        # Now a primary answers: a second failover is refused.
        refused(lab.cli("failover", VOLUME, *TIMEOUT), 1, "the primary of fo on node2 answers")
        agents.start(lab.state, lab.state.nodes["node1"])
    wait_until("node1 back", lambda: copy_state(lab, "node1", VOLUME) != {}, timeout=30)


# -- the replication policy follows (docs/failover.md, "The replication policy follows") --


def guids(lab: AgentLab, node: str, volume: str) -> list[int]:
    return lab.snapshot_guids(node, lab.ds(node, volume))


def policy_copy(lab: AgentLab, node: str, volume: str) -> dict[str, Any] | None:
    """The copy of its primary's policy that `node`'s replica keeps (None: none)."""
    value = lab.zget(node, lab.ds(node, volume), "zflock:policy-copy")["zflock:policy-copy"]
    if value == "-":
        return None
    copy: dict[str, Any] = json.loads(value)
    return copy


def power_cut(lab: AgentLab, node: str, volumes: list[str]) -> None:
    """As die() above, without a writer: link down, agent SIGKILLed, copies read-only."""
    set_link(lab, node, up=False)
    kill_agent(lab, node)
    for volume in volumes:
        dataset = lab.ds(node, volume)
        lab.sh(node, f"zfs set readonly=on {dataset} && zfs unmount {dataset}")


def failover_when_allowed(lab: AgentLab, volume: str) -> dict[str, Any]:
    outcome: dict[str, Any] = {}

    def failed_over() -> bool:
        r = lab.cli("failover", volume, "--json", *TIMEOUT)
        if r.returncode == 0:
            outcome.update(json.loads(r.stdout))
            return True
        # Only ever refused for the wait, a round a node answered too slowly, or a
        # replica still receiving the dead primary's last sync (its lock is held
        # until the agents' keepalive gives the cut stream up: about 15 s; CI once).
        retry = ("s left", "try again", "retry when it has finished")
        assert any(why in r.stderr for why in retry), r.stderr
        return False

    wait_until(f"the failover of {volume} to be allowed", failed_over, timeout=120, interval=1)
    return outcome


def bring_back(lab: AgentLab, node: str, volume: str) -> None:
    agents.start(lab.state, lab.state.nodes[node])
    wait_until(f"{node} back", lambda: copy_state(lab, node, volume) != {}, timeout=30)


def test_the_policy_follows_and_keeps_the_remaining_replica_fresh(
    failover_lab: AgentLab,
) -> None:
    lab, volume = failover_lab, "fc"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    with one_writable_copy(lab, volume):
        r = lab.cli("replicate", volume, "--to", "node2,node3", "--every", "3s")
        assert r.returncode == 0, r.stderr
        # Every sync leaves the replica a copy of the policy, at its serial (1: set once).
        for node in ("node2", "node3"):
            copy = policy_copy(lab, node, volume)
            assert copy is not None and (copy["serial"], copy["from"]) == (1, "node1")
            assert copy["policy"]["zflock:replicate-to"] == "node2,node3"
        # A copy is never acted upon: the replicas run no schedule of it.
        shown = json.loads(lab.cli("status", "--json").stdout)["schedules"]
        assert {s["node"] for s in shown if s["volume"] == volume} == {"node1"}, shown
        power_cut(lab, "node1", [volume])
        try:
            report = failover_when_allowed(lab, volume)
        finally:
            set_link(lab, "node1", up=True)
        # The freshest replica (whichever the schedule left newer) keeps the other one.
        new = report["node"]
        other = "node3" if new == "node2" else "node2"
        assert new in ("node2", "node3") and report["old_primary"] == "node1"
        assert report["policy"]["targets"] == [other] and report["policy"]["every"] == "3s"
        assert report["policy_from"] in ("node2", "node3") and report["policy_serial"] == 2
        # The new primary's scheduler keeps `other` fresh: a write, then a snapshot taken
        # after it reaches `other` (same GUID on both).
        lab.sh(new, f"echo after > /zflock/{volume}/after-failover && sync")
        before = set(guids(lab, new, volume))

        def synced_after_the_write() -> bool:
            theirs = guids(lab, other, volume)
            return bool(theirs) and theirs[-1] in set(guids(lab, new, volume)) - before

        wait_until("a scheduled sync from the new primary", synced_after_the_write, timeout=90)
        # The copy is stored after the receive (with the replica's pruning): a moment later.
        wait_until(f"{other}'s copy of the new primary's policy",
                   lambda: (policy_copy(lab, other, volume) or {}).get("serial") == 2)  # fmt: skip
        copy = policy_copy(lab, other, volume)
        assert copy is not None and (copy["serial"], copy["from"]) == (2, new)
        assert copy["policy"]["zflock:replicate-to"] == other
    bring_back(lab, "node1", volume)


def test_stop_tells_the_dropped_targets_and_a_failover_does_not_revive_them(
    failover_lab: AgentLab,
) -> None:
    lab = failover_lab
    for volume in ("fs", "fw", "fn"):
        assert lab.cli("create", volume, "--on", "node1").returncode == 0
    # node3 first, node2 last: node2 holds the newest snapshot of fs and fw.
    for volume in ("fs", "fw"):
        r = lab.cli("replicate", volume, "--to", "node3,node2", "--every", "7d")
        assert r.returncode == 0, r.stderr
    with one_writable_copy(lab, "fs"), one_writable_copy(lab, "fw"):
        # --stop --to node3: node3 is told at once (no sync reaches it any more).
        r = lab.cli("replicate", "fs", "--stop", "--to", "node3", "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout)
        assert (info["targets"], info["serial"], info["not_told"]) == (["node2"], 2, {})
        told = policy_copy(lab, "node3", "fs")
        assert told is not None and told["serial"] == 2
        assert told["policy"]["zflock:replicate-to"] == "node2"
        untold = policy_copy(lab, "node2", "fs")  # no sync since: the old copy
        assert untold is not None and untold["serial"] == 1
        # --stop of the whole policy: both targets are told there is none.
        r = lab.cli("replicate", "fw", "--stop", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["not_told"] == {}
        for node in ("node2", "node3"):
            copy = policy_copy(lab, node, "fw")
            assert copy is not None and (copy["serial"], copy["policy"]) == (2, {})
        # A target that does not answer cannot be told: named, and its copy stays old.
        r = lab.cli("replicate", "fn", "--to", "node2,node3", "--every", "7d")
        assert r.returncode == 0, r.stderr
        set_link(lab, "node3", up=False)
        try:
            r = lab.cli("replicate", "fn", "--stop", "--to", "node3")
        finally:
            set_link(lab, "node3", up=True)
        assert r.returncode == 0, r.stderr
        assert "could not tell node3" in r.stderr, r.stderr
        copy = policy_copy(lab, "node3", "fn")
        assert copy is not None and copy["serial"] == 1

        power_cut(lab, "node1", ["fs", "fw", "fn"])
        try:
            fs = failover_when_allowed(lab, "fs")
            fw = failover_when_allowed(lab, "fw")
        finally:
            set_link(lab, "node1", up=True)
        # fs: node3's copy is the newest (serial 2: targets node2), node2 is promoted, so
        # no target is left. With node2's old copy (node3,node2) node3 would be back.
        assert (fs["node"], fs["policy"], fs["policy_from"], fs["policy_serial"]) == (
            "node2", None, "node3", 3,
        )  # fmt: skip
        # fw: no policy stays no policy.
        assert (fw["node"], fw["policy"], fw["policy_serial"]) == ("node2", None, 3)
        assert not any("no replication policy" in w for w in fw["warnings"])
        for volume in ("fs", "fw"):
            stored = lab.zget("node2", lab.ds("node2", volume), "zflock:replicate-to",
                              "zflock:policy-serial")  # fmt: skip
            assert stored == {"zflock:replicate-to": "-", "zflock:policy-serial": "3"}
    bring_back(lab, "node1", "fs")
