"""The destination's promotion on real ZFS, through ZfsDestination alone (no agents).

A promotion is inside the move's downtime, and on zfs-fuse every `zfs` command is a
process and a round trip to the daemon. So it reads the copy once (the decision, the
newest snapshot's GUID, what is already in place and the snapshot it reports all come
from that read) and writes only what a replica lacks: a replica's mountpoint is
already this node's. The safety of each step is tests/move/test_fencing.py's (agents,
three nodes); these count what it costs, and check the end state.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import RecordingRunner, ZfsNode
from zflock.cluster.ownership import Ownership, ownership_properties
from zflock.move.endpoint import PromoteRequest
from zflock.move.fencing import PromotedBy
from zflock.move.marker import PROP_PROMOTED_BY
from zflock.move.zfs_destination import PromoteRefused, ZfsDestination
from zflock.replication.driver import replicate
from zflock.replication.endpoint import SourceIdentity
from zflock.replication.model import PlanOptions
from zflock.replication.naming import snapshot_name
from zflock.replication.policy import PROP_POLICY_SERIAL
from zflock.replication.zfs_endpoint import ZfsReceiver
from zflock.replication.zfs_sender import ZfsSender

VOLUME_ID = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
IDENTITY = SourceIdentity(volume="vol", volume_id=VOLUME_ID, epoch=1, origin="a", node="a")
MOVE_ID = "0123456789abcdef"
READS = ("get", "list")
SHOWN = ["zflock:role", "zflock:epoch", "readonly", "canmount", "mounted", "mountpoint"]


async def no_hooks(_: PromoteRequest) -> list[str]:
    return []


async def a_replica(src: ZfsNode, dst: ZfsNode, src_root: str, dst_root: str) -> tuple[str, int]:
    """`vol` on src (primary, epoch 1), sent whole to dst (stamped a replica there by
    the receiver); the name and GUID of the snapshot sent."""
    vol = f"{src_root}/vol"
    primary = Ownership(volume="vol", id=VOLUME_ID, epoch=1, role="primary", origin="a", seq=0)
    await src.zfs.create(vol, ownership_properties(primary))
    src.path(vol, "data").write_bytes(b"written before the move")
    await src.zfs.snapshot(vol, snapshot_name(datetime.now(UTC), 1))
    receiver = ZfsReceiver(dst.zfs, f"{dst_root}/vol", mountpoint(dst), "b")
    caps = [await n.zfs.capabilities() for n in (src, dst)]
    options = PlanOptions(resume_supported=all(c.resume_tokens for c in caps))
    outcome = await replicate(ZfsSender(src.zfs, vol, "a"), receiver, IDENTITY, options)
    got = outcome.newest
    assert got is not None and got.snapshot is not None and got.guid is not None
    return got.snapshot, got.guid


def mountpoint(node: ZfsNode) -> str:
    return f"{node.mount_root}/vol-mnt"


async def recorded(dst: ZfsNode, dst_root: str) -> tuple[ZfsDestination, RecordingRunner]:
    zfs, runner = await dst.recording()
    return ZfsDestination(zfs, f"{dst_root}/vol", mountpoint(dst), "b"), runner


def assert_read_once_then_written(seen: list[list[str]]) -> None:
    """Reads only before the first write, and at most one read (on zfs-fuse a read is
    two commands run together: `zfs get` and the `zfs list` that orders snapshots); no
    mountpoint written (a replica's is already this node's)."""
    verbs = [argv[1] for argv in seen]
    first_write = next(i for i, v in enumerate(verbs) if v not in READS)
    assert sorted(verbs[:first_write]) in (["get"], ["get", "list"]), seen
    assert not any(v in READS for v in verbs[first_write:]), seen
    assert not any(a.startswith("mountpoint=") for argv in seen for a in argv), seen
    assert verbs[-1] == "mount", seen


async def test_a_promotion_reads_the_copy_once_and_writes_only_what_a_replica_lacks(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    name, guid = await a_replica(src, dst, src_root, dst_root)
    destination, runner = await recorded(dst, dst_root)
    request = PromoteRequest(
        name="vol", volume_id=VOLUME_ID, move_id=MOVE_ID, epoch=2, guid=guid,
        source="a", policy={},
    )  # fmt: skip
    promotion = await destination.promote(request, no_hooks)
    assert (promotion.epoch, promotion.snapshot) == (2, name)
    assert await dst.zfs.get(f"{dst_root}/vol", SHOWN) == {
        "zflock:role": "primary", "zflock:epoch": "2", "readonly": "off", "canmount": "on",
        "mounted": "yes", "mountpoint": mountpoint(dst),
    }  # fmt: skip
    assert (await dst.zfs.get(f"{dst_root}/vol", [PROP_PROMOTED_BY]))[PROP_PROMOTED_BY] == (
        PromotedBy(MOVE_ID, 2).format()
    )
    assert_read_once_then_written(runner.seen)
    # The point of no return lands alone: `promoted-by`'s write (on OpenZFS the one
    # write of all) has ended before any other write starts.
    writes = [(kind, argv) for kind, argv in runner.events if argv[1] not in READS]
    assert writes[0][1][2].startswith(f"{PROP_PROMOTED_BY}="), runner.events
    assert writes[1] == ("end", writes[0][1]), runner.events
    # What a replica lacks: the promotion (with the policy's serial, none sent here),
    # epoch and role, writable, mountable; each written once.
    written = [a.split("=", 1)[0] for argv in runner.seen if argv[1] == "set" for a in argv[2:-1]]
    lacked = [PROP_PROMOTED_BY, PROP_POLICY_SERIAL, "zflock:epoch", "zflock:role", "readonly",
              "canmount"]  # fmt: skip
    assert sorted(written) == sorted(lacked), runner.seen
    # Promoting again (a retried request): the same answer, nothing more to write.
    runner.seen.clear()
    again = await destination.promote(request, no_hooks)
    assert (again.epoch, again.snapshot) == (2, name)
    assert [argv[1] for argv in runner.seen if argv[1] not in READS] == ["mount"], runner.seen


async def test_a_promotion_cut_short_after_its_point_of_no_return_is_finished_by_resolve(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await a_replica(src, dst, src_root, dst_root)
    # The crash: `promoted-by` written, nothing after it.
    await dst.zfs.set(f"{dst_root}/vol", {PROP_PROMOTED_BY: PromotedBy(MOVE_ID, 2).format()})
    destination, runner = await recorded(dst, dst_root)
    resolution = await destination.resolve(VOLUME_ID, MOVE_ID, 2)
    assert (resolution.answer, resolution.epoch) == ("promoted", 2)
    got = await dst.zfs.get(f"{dst_root}/vol", SHOWN)
    assert (got["zflock:role"], got["zflock:epoch"], got["readonly"], got["mounted"]) == (
        "primary", "2", "off", "yes",
    )  # fmt: skip
    assert_read_once_then_written(runner.seen)


async def test_a_refused_promotion_writes_nothing(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    """The refusals are the fencing rule's (tests/unit/test_move_fencing.py); this is
    their wiring on real ZFS: a promote for a move already abandoned here (the source
    asked `resolve` and rolled back), or whose final snapshot is not the replica's
    newest, is refused after the one read, and the copy stays a read-only replica."""
    src, dst = zfs_pair
    _, guid = await a_replica(src, dst, src_root, dst_root)
    destination, runner = await recorded(dst, dst_root)
    before = await dst.zfs.get(f"{dst_root}/vol", SHOWN)
    other = PromoteRequest(name="vol", volume_id=VOLUME_ID, move_id="fedcba9876543210",
                           epoch=2, guid=guid + 1, source="a", policy={})  # fmt: skip
    with pytest.raises(PromoteRefused, match="not the source's final snapshot"):
        await destination.promote(other, no_hooks)
    assert [argv[1] for argv in runner.seen if argv[1] not in READS] == [], runner.seen
    resolution = await destination.resolve(VOLUME_ID, MOVE_ID, 2)
    assert resolution.answer == "aborted", resolution
    late = PromoteRequest(name="vol", volume_id=VOLUME_ID, move_id=MOVE_ID, epoch=2,
                          guid=guid, source="a", policy={})  # fmt: skip
    runner.seen.clear()
    with pytest.raises(PromoteRefused, match="refusing to promote"):
        await destination.promote(late, no_hooks)
    assert [argv[1] for argv in runner.seen if argv[1] not in READS] == [], runner.seen
    assert await dst.zfs.get(f"{dst_root}/vol", SHOWN) == before
    assert (await dst.zfs.get(f"{dst_root}/vol", [PROP_PROMOTED_BY]))[PROP_PROMOTED_BY] is None
