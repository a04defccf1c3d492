"""Pruning after each sync between real agents (issue 11 item 3).

- Repeated `zflock replicate` runs with small keep rules keep exactly what the
  rules say on the primary and on the replica, never the common base, leave an
  operator's snapshot alone, and every later sync is still an incremental. On
  OpenZFS (the lab on kernel ZFS, tests/openzfs-vm) the replica's base also
  carries the `zflock-base` hold and the primary's cursor bookmark marks it;
  the replica's copy can still be destroyed (the hold is released first).
- A replica's agent refuses a `prune_replica` request, sent directly over the
  RPC client as a buggy or stale peer would, that would destroy its newest
  common snapshot with the primary (or anything its own rules keep), and
  destroys nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.agentlab import AgentLab
from tests.replication.labops import call_agent, connect, replicate, snaprefs
from zflock.replication.endpoint import PruneRequest, SourceIdentity
from zflock.replication.history import diff
from zflock.rpc import messages as m
from zflock.rpc.errors import RemoteError
from zflock.rpc.replica import RemoteReceiver

pytestmark = pytest.mark.lab


def names(lab: AgentLab, node: str, volume: str) -> list[str]:
    return [s.name for s in snaprefs(lab, node, lab.ds(node, volume))]


def identity(lab: AgentLab, volume: str) -> SourceIdentity:
    props = lab.zget("node1", lab.ds("node1", volume), "zflock:id", "zflock:epoch", "zflock:origin")
    return SourceIdentity(volume=volume, volume_id=props["zflock:id"],
                          epoch=int(props["zflock:epoch"]), origin=props["zflock:origin"],
                          node="node1")  # fmt: skip


def capability(lab: AgentLab, node: str, name: str) -> bool:
    info = asyncio.run(call_agent(lab, node, "node_info", m.Empty()))
    assert isinstance(info, m.NodeInfo)
    return info.capabilities[name]


def test_repeated_syncs_keep_what_the_rules_say_on_both_sides(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "kept", "--on", "node1").returncode == 0
    src = lab.ds("node1", "kept")
    lab.sh("node1", f"echo zero > /zflock/kept/f0 && zfs snapshot {src}@operator")
    # A week's interval: the scheduler stays out of the way; every sync here is asked for.
    r = lab.cli("replicate", "kept", "--to", "node2", "--every", "1w",
                "--keep", "last=2", "--keep-replica", "last=3")  # fmt: skip
    assert r.returncode == 0, r.stderr
    for round in range(1, 6):
        lab.sh("node1", f"echo {round} > /zflock/kept/f{round}")
        steps = replicate(lab, "kept", "node2")["steps"]
        assert [s["kind"] for s in steps] == ["incremental"], (round, steps)
        on_src, on_dst = names(lab, "node1", "kept"), names(lab, "node2", "kept")
        ours_src = [n for n in on_src if n != "operator"]
        ours_dst = [n for n in on_dst if n != "operator"]
        # last=2 on the primary, last=3 on the replica (two syncs before this loop:
        # the policy's first sync and round 1's, each one snapshot).
        assert len(ours_src) == min(round + 1, 2), (round, on_src)
        assert len(ours_dst) == min(round + 1, 3), (round, on_dst)
        assert ours_dst[-len(ours_src) :] == ours_src  # the newest, the common base, on both
        assert "operator" in on_src and "operator" in on_dst
    assert lab.checksums("node2", "kept") == lab.checksums("node1", "kept")
    base = names(lab, "node1", "kept")[-1]
    if capability(lab, "node2", "holds"):
        held = lab.node_run("node2", "zfs", "holds", "-H", f"{lab.ds('node2', 'kept')}@{base}")
        assert "zflock-base" in held.stdout, held.stdout
    if capability(lab, "node1", "bookmarks"):
        marks = lab.node_run("node1", "zfs", "list", "-H", "-t", "bookmark", "-o", "name,guid",
                             "-r", src)  # fmt: skip
        guid = lab.zget("node1", f"{src}@{base}", "guid")["guid"]
        assert f"{src}#zflock-cursor-node2\t{guid}" in marks.stdout, marks.stdout
    # The replica's copy can still be destroyed (its base hold is released first).
    r = lab.cli("destroy", "kept", "--node", "node2", "--force")
    assert r.returncode == 0, r.stderr
    assert not lab.snapshot_guids("node2", lab.ds("node2", "kept"))


async def prune(lab: AgentLab, volume: str, request: PruneRequest) -> None:
    async with await connect(lab, "node3") as client:
        await RemoteReceiver(client, volume).prune(identity(lab, volume), request)


def test_replica_refuses_to_prune_its_newest_common_snapshot(agent_lab: AgentLab) -> None:
    lab = agent_lab
    assert lab.cli("create", "guarded", "--on", "node1").returncode == 0
    src, dst = lab.ds("node1", "guarded"), lab.ds("node3", "guarded")
    for round in range(3):
        lab.sh("node1", f"echo {round} > /zflock/guarded/f{round}")
        replicate(lab, "guarded", "node3")  # no policy: the default rules keep all recent
    # The primary lost its newest snapshot (an operator destroyed it): the replica's
    # newest common snapshot with it is now the one before the replica's newest.
    newest = names(lab, "node1", "guarded")[-1]
    lab.sh("node1", f"zfs destroy {src}@{newest}")
    source, replica = snaprefs(lab, "node1", src), snaprefs(lab, "node3", dst)
    base = diff(source, replica).destination_base
    assert base is not None and base.guid == replica[-2].guid
    now = datetime.now(UTC).timestamp()

    def refused(destroy: list[int], why: str) -> None:
        before = (lab.zfs_state(), names(lab, "node3", "guarded"))
        doomed = [s for s in replica if s.guid in destroy]
        request = PruneRequest(keep="last=1", now=now, source_snapshots=source, destroy=doomed)
        with pytest.raises(RemoteError, match=f"{why}; nothing was destroyed") as caught:
            asyncio.run(prune(lab, "guarded", request))
        assert "\n" not in str(caught.value)
        assert (lab.zfs_state(), names(lab, "node3", "guarded")) == before

    refused([replica[0].guid, base.guid], "the newest common snapshot with node1")
    refused([replica[-1].guid], "the newest snapshot")
    # A peer claiming a sender that has none of them does not get the newest either.
    before = names(lab, "node3", "guarded")
    request = PruneRequest(keep="last=1", now=now, source_snapshots=[], destroy=replica)
    with pytest.raises(RemoteError, match="the newest snapshot; nothing was destroyed"):
        asyncio.run(prune(lab, "guarded", request))
    assert names(lab, "node3", "guarded") == before
    # What the replica's own decision allows goes.
    request = PruneRequest(keep="last=1", now=now, source_snapshots=source, destroy=[replica[0]])
    asyncio.run(prune(lab, "guarded", request))
    assert names(lab, "node3", "guarded") == [s.name for s in replica[1:]]


def test_the_primary_keeps_every_targets_base(agent_lab: AgentLab) -> None:
    """Two targets: syncs to node2 alone prune the primary, which asks node3 for its
    state and keeps node3's newest common snapshot, so node3's next sync is still an
    incremental."""
    lab = agent_lab
    assert lab.cli("create", "both", "--on", "node1").returncode == 0
    lab.sh("node1", "echo 0 > /zflock/both/f0")
    r = lab.cli("replicate", "both", "--to", "node2,node3", "--every", "1w",
                "--keep", "last=1", "--keep-replica", "last=1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    node3_base = names(lab, "node3", "both")[-1]
    for round in range(1, 4):
        lab.sh("node1", f"echo {round} > /zflock/both/f{round}")
        replicate(lab, "both", "node2")
        on_src = names(lab, "node1", "both")
        assert on_src == [node3_base, names(lab, "node2", "both")[-1]], (round, on_src)
    steps = replicate(lab, "both", "node3")["steps"]
    assert [s["kind"] for s in steps] == ["incremental"], steps
    # node3's cycle took a new snapshot: the primary keeps it and node2's base.
    node2_base, [newest] = names(lab, "node2", "both")[-1], names(lab, "node3", "both")
    assert names(lab, "node1", "both") == [node2_base, newest]
    assert lab.checksums("node3", "both") == lab.checksums("node1", "both")
