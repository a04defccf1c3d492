"""Replication safety on real agents (issue 10, items 5, 6 and 9).

- A first receive that completed but was never stamped (the agent died between
  the receive and the stamp) is adopted as a read-only, unmounted replica when
  its snapshots are all the source's; anything else unstamped is still refused.
- A replica written to by hand after its newest snapshot is rolled back with a
  warning, and replicate and move to it work again; a replica with a snapshot
  of its own is still refused.
- The receiving agent checks what a peer asks it to discard (snapshots to
  destroy, a rollback, `receive -F`, an adoption) against its own state, and
  refuses what its own rules do not allow, changing nothing.

Each builds the state with plain `zfs` inside the node (what a crash or an
operator leaves), so they run the same on zfs-fuse and on OpenZFS.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from tests.agentlab import AgentLab
from tests.replication.labops import (
    chunks_of,
    connect,
    raw_receive,
    refused,
    replicate,
    send_bytes,
    snaprefs,
)
from zflock.replication.endpoint import Cleanup, SourceIdentity, StepHeader
from zflock.rpc.errors import RemoteError
from zflock.rpc.replica import RemoteReceiver

pytestmark = pytest.mark.lab

REPLICA_END = {"zflock:role": "replica", "readonly": "on", "mounted": "no", "canmount": "noauto"}


def end_state(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    return lab.zget(node, lab.ds(node, volume), *REPLICA_END, "zflock:epoch", "zflock:id")


def assert_replica_of(lab: AgentLab, volume: str, primary: str, replica: str) -> None:
    """`replica` holds exactly the primary's snapshots and data, as a locked-down replica."""
    state = end_state(lab, replica, volume)
    source = lab.zget(primary, lab.ds(primary, volume), "zflock:epoch", "zflock:id")
    assert state == {**REPLICA_END, **source}, state
    assert lab.snapshot_guids(replica, lab.ds(replica, volume)) == lab.snapshot_guids(
        primary, lab.ds(primary, volume)
    )
    assert lab.checksums(replica, volume) == lab.checksums(primary, volume)


def hand_write(lab: AgentLab, node: str, volume: str, script: str) -> None:
    """What an operator does to a replica: make it writable, mount it, change it."""
    ds = lab.ds(node, volume)
    lab.sh(node, f"zfs set readonly=off {ds} && zfs mount {ds} && cd /zflock/{volume} && {script}")


# -- item 5: a completed first receive that was never stamped ------------------------------


def test_unstamped_first_receive_is_adopted_as_a_replica(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "crashed", "--on", "node1").returncode == 0
    src = lab.ds("node1", "crashed")
    lab.sh("node1", f"head -c 500000 /dev/urandom > /zflock/crashed/a && zfs snapshot {src}@one")
    # The agent's first receive landed, then the agent died before stamping it:
    # no zflock property, not read-only (and mounted, where the receive mounts).
    raw_receive(lab, "node2", lab.ds("node2", "crashed"), send_bytes(lab, "node1", f"{src}@one"))
    assert lab.zget("node2", lab.ds("node2", "crashed"), "zflock:volume")["zflock:volume"] == "-"
    lab.sh("node1", "echo later > /zflock/crashed/b")

    steps = replicate(lab, "crashed", "node2")["steps"]
    assert isinstance(steps, list)
    assert [s["kind"] for s in steps] == ["incremental"]  # nothing sent again in full
    assert_replica_of(lab, "crashed", "node1", "node2")
    ls = json.loads(lab.cli("ls", "crashed", "--json").stdout)
    assert {c["node"]: c["role"] for c in ls["volumes"][0]["copies"]} == {
        "node1": "primary", "node2": "replica"
    }  # fmt: skip


def test_unstamped_dataset_with_a_snapshot_of_its_own_is_refused(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "mixed", "--on", "node1").returncode == 0
    src, dst = lab.ds("node1", "mixed"), lab.ds("node2", "mixed")
    lab.sh("node1", f"echo one > /zflock/mixed/f && zfs snapshot {src}@one")
    raw_receive(lab, "node2", dst, send_bytes(lab, "node1", f"{src}@one"))
    # Someone else's history on top: not ours to stamp, nor to roll back.
    lab.sh("node2", f"zfs snapshot {dst}@theirs")
    refused(lab, "mixed", "node2", "not a zflock dataset")
    # Nor when a peer asks the agent directly to adopt it.
    before = lab.zfs_state()
    with pytest.raises(RemoteError, match="refusing to adopt"):
        asyncio.run(prepare(lab, "mixed", Cleanup(adopt=True)))
    assert lab.zfs_state() == before
    assert lab.zget("node2", dst, "zflock:volume")["zflock:volume"] == "-"


# -- item 6: a replica written to after its newest snapshot --------------------------------


def test_replica_written_by_hand_is_rolled_back_with_a_warning(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "touched", "--on", "node1").returncode == 0
    lab.sh("node1", "head -c 300000 /dev/urandom > /zflock/touched/a")
    replicate(lab, "touched", "node2")
    hand_write(lab, "node2", "touched", "echo hand > hand.txt && echo x >> a")
    lab.sh("node1", "echo more > /zflock/touched/b")

    out = replicate(lab, "touched", "node2")
    warnings = out["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 1, warnings
    assert "written to after its newest snapshot" in warnings[0]
    assert_replica_of(lab, "touched", "node1", "node2")
    assert "./hand.txt" not in lab.checksums("node2", "touched")

    again = replicate(lab, "touched", "node2")
    assert again["warnings"] == []

    # Touched again, then a move to it: rolled back the same way, and the move succeeds.
    hand_write(lab, "node2", "touched", "echo hand > hand.txt")
    lab.sh("node1", "echo last > /zflock/touched/c")
    data = lab.checksums("node1", "touched")
    r = lab.cli("move", "touched", "--to", "node2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"] == "moved"
    assert lab.checksums("node2", "touched") == data
    assert lab.zget("node2", lab.ds("node2", "touched"), "zflock:role", "readonly") == {
        "zflock:role": "primary", "readonly": "off"
    }  # fmt: skip


def test_replica_with_a_snapshot_of_its_own_is_still_refused(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "forked", "--on", "node1").returncode == 0
    lab.sh("node1", "echo one > /zflock/forked/f")
    replicate(lab, "forked", "node2")
    ds = lab.ds("node2", "forked")
    hand_write(lab, "node2", "forked", f"echo x > x && zfs snapshot {ds}@mine && echo y > y")
    refused(lab, "forked", "node2", "@mine", "--force-rollback")
    refused(lab, "forked", "node2", "@mine", command="move")
    assert lab.sh("node2", "cat /zflock/forked/y") == "y\n"


# -- item 9: the receiver decides what it may discard --------------------------------------


def identity(lab: AgentLab, volume: str) -> SourceIdentity:
    props = lab.zget("node1", lab.ds("node1", volume), "zflock:id", "zflock:epoch", "zflock:origin")
    return SourceIdentity(volume=volume, volume_id=props["zflock:id"],
                          epoch=int(props["zflock:epoch"]), origin=props["zflock:origin"],
                          node="node1")  # fmt: skip


async def prepare(lab: AgentLab, volume: str, cleanup: Cleanup, node: str = "node2") -> None:
    """A peer (node1, by what it claims) asks `node`'s agent to clean up before a receive."""
    source = snaprefs(lab, "node1", lab.ds("node1", volume))
    async with await connect(lab, node) as client:
        await RemoteReceiver(client, volume).prepare(
            identity(lab, volume),
            replace(cleanup, source_snapshots=source),
        )


async def receive(lab: AgentLab, volume: str, header: StepHeader, stream: bytes) -> None:
    async with await connect(lab, "node3") as client:
        await RemoteReceiver(client, volume).receive(
            identity(lab, volume), header, chunks_of(stream)
        )


def test_receiver_refuses_discards_its_own_state_does_not_justify(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "guard", "--on", "node1").returncode == 0
    src, dst = lab.ds("node1", "guard"), lab.ds("node3", "guard")
    lab.sh("node1", "echo one > /zflock/guard/f")
    replicate(lab, "guard", "node3")
    lab.sh("node1", "echo two > /zflock/guard/g")
    replicate(lab, "guard", "node3")
    lab.sh("node3", f"zfs snapshot {dst}@own")  # the replica's own snapshot, after the common ones
    older, newer, own = snaprefs(lab, "node3", dst)
    assert own.name == "own"

    def refuses(what: str, cleanup: Cleanup) -> None:
        before = (lab.zfs_state(), lab.snapshot_guids("node3", dst))
        with pytest.raises(RemoteError, match=what):
            asyncio.run(prepare(lab, "guard", cleanup, node="node3"))
        assert (lab.zfs_state(), lab.snapshot_guids("node3", dst)) == before

    # Its own snapshot, without the operator's --force-rollback.
    refuses("only --force-rollback", Cleanup(destroy_snapshots=[own], rollback_to=newer))
    # Common history, even "with" --force-rollback.
    refuses("common history", Cleanup(destroy_snapshots=[own, newer], rollback_to=older,
                                       force_rollback=True))  # fmt: skip
    # A rollback past snapshots that would be kept.
    refuses("would discard", Cleanup(rollback_to=older))
    # Destroying a replica that has snapshots.
    refuses("has 3 snapshot", Cleanup(recreate=True))
    # Adopting what is stamped already.
    refuses("refusing to adopt", Cleanup(adopt=True))

    # `receive -F` of an incremental from an older base: ZFS would destroy every
    # snapshot after that base (the replica's own included) to apply it.
    lab.sh("node1", f"echo three > /zflock/guard/h && zfs snapshot {src}@three")
    stream = send_bytes(lab, "node1", f"{src}@three", base=f"{src}@{older.name}")
    to = snaprefs(lab, "node1", src)[-1]
    header = StepHeader(kind="incremental", to=to, base=older, force=True)
    before = (lab.zfs_state(), lab.snapshot_guids("node3", dst))
    with pytest.raises(RemoteError, match="refusing `receive -F`"):
        asyncio.run(receive(lab, "guard", header, stream))
    assert (lab.zfs_state(), lab.snapshot_guids("node3", dst)) == before

    # What the rules do allow still works: the operator's own --force-rollback.
    replicate(lab, "guard", "node3", "--force-rollback")
    assert lab.snapshot_guids("node3", dst) == lab.snapshot_guids("node1", src)
