"""The replication endpoints against real ZFS, without agents: an interrupted *first*
receive on OpenZFS (the partial stream kept as the dataset itself, never stamped), and
a completed first receive never stamped (adopted, on either ZFS).

The receiver must see whose it is (the token's target GUID), resume into it or
discard it, and nothing else; the sender must resume only its own dataset's
streams, whatever token a peer hands it. zfs-fuse has no resumable receive, so the
resume tests skip there because the probe says so (and fail if the OpenZFS tier lacks it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.conftest import ZfsNode
from tests.zfsstreams import cut_resumable_receive, guid, need, random_snapshot, send_bytes
from zflock.cluster.ownership import Ownership, ownership_properties
from zflock.errors import ZflockError
from zflock.replication.admit import NotAdmitted
from zflock.replication.endpoint import Cleanup, PruneRequest, SourceIdentity, StepHeader
from zflock.replication.policy import PolicyCopy
from zflock.replication.zfs_endpoint import ReceiveRefused, ZfsReceiver
from zflock.replication.zfs_prune import snapref
from zflock.replication.zfs_sender import ZfsSender

IDENTITY = SourceIdentity(volume="vol", volume_id="id-vol", epoch=1, origin="a", node="a")
# A real zflock:id (a UUID), for a dataset that is checked as a replica once stamped.
ADOPTER = SourceIdentity(
    volume="vol", volume_id="0b6f6c3e-5f7a-4c1e-9a53-7d1f0c2b9e41", epoch=1, origin="a", node="a"
)


async def chunks_of(sender: ZfsSender, header: StepHeader) -> AsyncIterator[bytes]:
    async with sender.send(header) as stream:
        async for chunk in stream:
            yield chunk


async def test_unstamped_partial_first_receive_is_resumed_and_stamped(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "resume_tokens")
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    await random_snapshot(src, vol, 2_000_000)
    _, token = await cut_resumable_receive(src, f"{vol}@s1", dst, target)

    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    state = await receiver.state()
    assert (state.managed_volume, state.snapshots) == (None, ())
    assert state.resume_to_guid == await guid(src, vol, "s1")

    header = StepHeader(kind="resume", to=None, token=token, resumable=True)
    result = await receiver.receive(
        IDENTITY, header, chunks_of(ZfsSender(src.zfs, vol, "a"), header)
    )
    assert result.guid == await guid(src, vol, "s1")
    props = await dst.zfs.get(target, ["zflock:volume", "zflock:id", "zflock:role", "readonly"])
    assert props == {"zflock:volume": "vol", "zflock:id": "id-vol", "zflock:role": "replica",
                     "readonly": "on"}  # fmt: skip


async def test_unstamped_partial_first_receive_can_be_discarded(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "resume_tokens")
    await random_snapshot(src, src_root, 1_000_000)
    target = f"{dst_root}/vol"
    await cut_resumable_receive(src, f"{src_root}@s1", dst, target)
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    await receiver.prepare(IDENTITY, Cleanup(abort_partial_receive=True))
    assert not await dst.zfs.exists(target)


async def test_a_foreign_dataset_is_never_taken_for_a_partial_receive(
    zfs_pair: tuple[ZfsNode, ZfsNode], dst_root: str
) -> None:
    _, dst = zfs_pair
    await need(dst, "resume_tokens")
    # Not ours and complete (no token): the partial-receive exception must not apply.
    target = f"{dst_root}/other"
    await dst.zfs.create(target)
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/other-mnt", "b")
    with pytest.raises(ZflockError, match="not a zflock replica"):
        await receiver.prepare(IDENTITY, Cleanup(abort_partial_receive=True))
    assert await dst.zfs.exists(target)


async def test_sender_resumes_only_its_own_datasets_streams(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "resume_tokens")
    mine, other = f"{src_root}/mine", f"{src_root}/other"
    for dataset in (mine, other):
        await src.zfs.create(dataset)
        await random_snapshot(src, dataset, 1_000_000)
    _, token = await cut_resumable_receive(src, f"{other}@s1", dst, f"{dst_root}/x")
    header = StepHeader(kind="resume", to=None, token=token, resumable=True)
    # A peer hands `mine`'s sender a token for `other`: refused before anything is sent.
    with pytest.raises(ZflockError, match=r"refusing to resume a stream of .*other@s1"):
        async with ZfsSender(src.zfs, mine, "a").send(header):
            pass
    assert [c async for c in chunks_of(ZfsSender(src.zfs, other, "a"), header)]


async def test_unstamped_completed_first_receive_is_adopted_read_only_and_unmounted(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    # The agent died between a full receive that landed and its stamp (rule 3).
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    await random_snapshot(src, vol, 500_000)
    async with dst.zfs.receive(target) as recv:  # mounted where the ZFS mounts it
        await recv.write(await send_bytes(src, f"{vol}@s1"))
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    theirs = Cleanup(
        adopt=True, source_snapshots=[snapref(s) for s in await src.zfs.list_snapshots(vol)]
    )

    # Claimed by a sender that does not have its snapshot: not ours to stamp.
    with pytest.raises(NotAdmitted, match="refusing to adopt"):
        await receiver.prepare(ADOPTER, Cleanup(adopt=True, source_snapshots=[]))
    assert (await dst.zfs.get(target, ["zflock:volume"]))["zflock:volume"] is None

    await receiver.prepare(ADOPTER, theirs)
    props = await dst.zfs.get(
        target, ["zflock:volume", "zflock:id", "zflock:role", "readonly", "mounted", "canmount"]
    )
    assert props == {"zflock:volume": "vol", "zflock:id": ADOPTER.volume_id,
                     "zflock:role": "replica", "readonly": "on", "mounted": "no",
                     "canmount": "noauto"}  # fmt: skip
    # Adopted once: asking again is refused (it is a stamped replica now).
    with pytest.raises(NotAdmitted, match="refusing to adopt"):
        await receiver.prepare(ADOPTER, theirs)


async def test_the_receiver_refuses_by_its_own_state_whatever_the_sender_planned(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    """The receiver's own rules, without the planner in front of them (a peer with a bug
    or a stale view): a sender of an older epoch (a fenced former primary), of another
    volume, or into a copy that is a primary is refused, for a receive, a prune and a
    policy copy alike, and nothing changes. Checked on the one read each call makes."""
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    now = replace(ADOPTER, epoch=2)  # the replica's primary is at epoch 2
    await src.zfs.create(vol, ownership_properties(
        Ownership(now.volume, now.volume_id, now.epoch, "primary", now.origin, 0)
    ))  # fmt: skip
    await random_snapshot(src, vol, 200_000, "s1")
    sender = ZfsSender(src.zfs, vol, "a")
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    s1 = (await sender.source()).snapshots[0]
    full = StepHeader(kind="full", to=s1)
    await receiver.receive(now, full, chunks_of(sender, full))
    await random_snapshot(src, vol, 200_000, "s2")
    s2 = (await sender.source()).snapshots[1]
    step = StepHeader(kind="incremental", to=s2, base=s1)
    copy = PolicyCopy(1, "a", 0.0, {})
    before = await dst.zfs.dataset_state(target, ["zflock:epoch", "zflock:policy-copy"])

    stale, foreign = replace(now, epoch=1), replace(now, volume_id="id-other")
    refusals = [(stale, "newer than the sender's"), (foreign, "belongs to another volume")]
    for who, why in refusals:
        with pytest.raises(ReceiveRefused, match=why):
            await receiver.receive(who, step, chunks_of(sender, step))
        with pytest.raises(ReceiveRefused, match=why):
            await receiver.prune(who, PruneRequest(keep="last=1", now=0.0), copy)
        with pytest.raises(ReceiveRefused, match=why):
            await receiver.keep_policy(who, copy)
    assert await dst.zfs.dataset_state(target, ["zflock:epoch", "zflock:policy-copy"]) == before

    await dst.zfs.set(target, {"zflock:role": "primary"})
    with pytest.raises(ReceiveRefused, match="only a replica is ever received into"):
        await receiver.receive(now, step, chunks_of(sender, step))
    await dst.zfs.set(target, {"zflock:role": "replica"})
    assert (await receiver.receive(now, step, chunks_of(sender, step))).guid == s2.guid


async def test_an_incremental_receive_finds_its_base_by_name_and_checks_its_guid(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    """Around a plain incremental receive the replica reads only the base and then the
    snapshot received (Zfs.dataset_state_with), not every snapshot: a base of the right
    name but another GUID is still refused before anything runs (the replica then reads
    every snapshot: the GUID decides, as before), and the received snapshot verified."""
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    who = ADOPTER
    await src.zfs.create(vol, ownership_properties(
        Ownership(who.volume, who.volume_id, who.epoch, "primary", who.origin, 0)
    ))  # fmt: skip
    await random_snapshot(src, vol, 100_000, "s1")
    sender = ZfsSender(src.zfs, vol, "a")
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    s1 = (await sender.source()).snapshots[0]
    full = StepHeader(kind="full", to=s1)
    await receiver.receive(who, full, chunks_of(sender, full))
    await random_snapshot(src, vol, 100_000, "s2")
    s2 = (await sender.source()).snapshots[1]
    before = await dst.zfs.dataset_state(target, ["zflock:epoch"])

    wrong = replace(s1, guid=s1.guid + 1)
    step = StepHeader(kind="incremental", to=s2, base=wrong)
    with pytest.raises(ReceiveRefused, match=f"no snapshot with guid {wrong.guid}"):
        await receiver.receive(who, step, chunks_of(sender, step))
    assert await dst.zfs.dataset_state(target, ["zflock:epoch"]) == before

    step = StepHeader(kind="incremental", to=s2, base=s1)
    assert (await receiver.receive(who, step, chunks_of(sender, step))).guid == s2.guid
    assert [s.guid for s in (await receiver.state()).snapshots] == [s1.guid, s2.guid]


async def test_the_senders_read_after_a_snapshot_is_a_full_read(
    zfs_node: ZfsNode, src_root: str
) -> None:
    """A cycle reads the primary again after its snapshot with that snapshot only
    (ZfsSender.read_adding): what it gives is what a full read gives, but for the `used`
    of older snapshots; a snapshot that is not there makes it read every one."""
    zfs = zfs_node.zfs
    vol = f"{src_root}/vol"
    who = ADOPTER
    await zfs.create(vol, ownership_properties(
        Ownership(who.volume, who.volume_id, who.epoch, "primary", who.origin, 0)
    ))  # fmt: skip
    for snap in ("s1", "s2"):
        await zfs.snapshot(vol, snap)
    sender = ZfsSender(zfs, vol, "a")
    before = await sender.read()
    await zfs.snapshot(vol, "s3")
    after, full = await sender.read_adding(before, "s3"), await sender.read()

    def key(s: object) -> tuple[object, ...]:
        return tuple(getattr(s, f) for f in ("name", "guid", "createtxg", "index", "referenced"))

    assert [key(s) for s in after.snapshots] == [key(s) for s in full.snapshots]
    assert after.values == full.values and after.local == full.local
    assert sender.source_of(after) == sender.source_of(full)
    missed = await sender.read_adding(before, "never")
    assert [s.name for s in missed.snapshots] == ["s1", "s2", "s3"]
