"""Features only OpenZFS has: resumable receive, receive -u, send estimates, holds, bookmarks.

Each test asks the capability probe. Where it says the feature is missing
(zfs-fuse) the test is skipped *because the probe says so*; in the OpenZFS
tier (ZFLOCK_TEST_ZFS=native, tests/openzfs-vm) a missing feature is a
failure instead, so these tests can never be skipped silently there.
The last test checks the other side: where the probe says no, the client
refuses with Unsupported before running anything.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import ZfsNode
from tests.zfsstreams import (
    cut_resumable_receive,
    guid,
    need,
    random_snapshot,
    send_bytes,
    tree,
)
from zflock.zfs import DatasetBusy, InvalidName, Unsupported, pipe

FEATURES = ("resume_tokens", "receive_unmounted", "send_estimates", "holds", "bookmarks")


async def test_resume_after_cut_stream(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "resume_tokens")
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    await random_snapshot(src, vol, 2_000_000)
    # The connection "drops" half-way: the receive sees EOF and fails, but
    # with -s it keeps what arrived and offers a token to resume from.
    stream, token = await cut_resumable_receive(src, f"{vol}@s1", dst, target)
    # Either side decodes which snapshot the token completes: the destination to
    # prove an unstamped partial receive is this volume's, the source to refuse a
    # token for any other dataset.
    for side in (dst, src):
        info = await side.zfs.describe_resume_token(token)
        assert info is not None
        assert (info.to_guid, info.to_name) == (await guid(src, vol, "s1"), f"{vol}@s1")
        assert info.from_guid is None and info.bytes is not None and 0 < info.bytes < len(stream)

    resumed = await pipe(
        src.zfs.send(f"{vol}@s1", resume_token=token), dst.zfs.receive(target, resumable=True)
    )
    assert 0 < resumed < len(stream)  # only the missing part travelled again
    assert await dst.zfs.resume_token(target) is None
    assert await guid(dst, target, "s1") == await guid(src, vol, "s1")
    assert tree(dst, target) == tree(src, vol)


async def test_abort_resumable_receive_discards_partial_state(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "resume_tokens")
    await random_snapshot(src, src_root, 1_000_000)
    target = f"{dst_root}/cut"
    await cut_resumable_receive(src, f"{src_root}@s1", dst, target, fraction=1 / 3)
    await dst.zfs.abort_resumable_receive(target)
    assert not await dst.zfs.exists(target)


async def test_receive_unmounted_full_and_incremental(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(dst, "receive_unmounted")
    target = f"{dst_root}/replica"
    src.path(src_root, "a").write_bytes(b"one")
    await src.zfs.snapshot(src_root, "s1")
    await pipe(src.zfs.send(f"{src_root}@s1"), dst.zfs.receive(target, unmounted=True))
    assert not await dst.zfs.is_mounted(target)
    src.path(src_root, "b").write_bytes(b"two")
    await src.zfs.snapshot(src_root, "s2")
    await pipe(
        src.zfs.send(f"{src_root}@s2", base=f"{src_root}@s1"),
        dst.zfs.receive(target, unmounted=True),
    )
    assert not await dst.zfs.is_mounted(target)
    await dst.zfs.mount(target)
    assert tree(dst, target) == {"a": b"one", "b": b"two"}


async def test_send_estimates_are_close_to_the_real_stream(
    zfs_node: ZfsNode, src_root: str
) -> None:
    await need(zfs_node, "send_estimates")
    zfs_node.path(src_root, "a.bin").write_bytes(os.urandom(1_000_000))
    await zfs_node.zfs.snapshot(src_root, "s1")
    zfs_node.path(src_root, "b.bin").write_bytes(os.urandom(300_000))
    await zfs_node.zfs.snapshot(src_root, "s2")

    full = await zfs_node.zfs.estimate_send_size(f"{src_root}@s1")
    delta = await zfs_node.zfs.estimate_send_size(f"{src_root}@s2", base=f"{src_root}@s1")
    real_full = len(await send_bytes(zfs_node, f"{src_root}@s1"))
    real_delta = len(await send_bytes(zfs_node, f"{src_root}@s2", base=f"{src_root}@s1"))
    assert full is not None and delta is not None
    assert real_full / 2 <= full <= real_full * 2, (full, real_full)
    assert real_delta / 2 <= delta <= real_delta * 2, (delta, real_delta)
    assert delta < full


async def test_hold_protects_snapshot_until_released(zfs_node: ZfsNode, src_root: str) -> None:
    await need(zfs_node, "holds")
    zfs = zfs_node.zfs
    snap = f"{src_root}@base"
    await zfs.snapshot(src_root, "base")
    await zfs.hold(snap, "zflock-base")
    await zfs.hold(snap, "zflock-other")
    assert await zfs.holds(snap) == ["zflock-base", "zflock-other"]
    with pytest.raises(DatasetBusy):
        await zfs.destroy_snapshot(src_root, "base")
    await zfs.release(snap, "zflock-other")
    assert await zfs.holds(snap) == ["zflock-base"]
    with pytest.raises(DatasetBusy):
        await zfs.destroy_snapshot(src_root, "base")
    await zfs.release(snap, "zflock-base")
    assert await zfs.holds(snap) == []
    await zfs.destroy_snapshot(src_root, "base")
    assert not await zfs.exists(snap)
    with pytest.raises(InvalidName):
        await zfs.hold(snap, "bad tag")


async def test_bookmark_is_an_incremental_base_after_the_snapshot_is_gone(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await need(src, "bookmarks")
    target = f"{dst_root}/replica"
    src.path(src_root, "a").write_bytes(os.urandom(100_000))
    s1 = await src.zfs.snapshot(src_root, "s1")
    await pipe(src.zfs.send(f"{src_root}@s1"), dst.zfs.receive(target))
    await dst.zfs.set(target, {"readonly": "on"})

    mark = await src.zfs.bookmark(f"{src_root}@s1", "s1")
    assert mark == f"{src_root}#s1"
    await src.zfs.destroy_snapshot(src_root, "s1")
    (listed,) = await src.zfs.list_bookmarks(src_root)
    assert (listed.full_name, listed.guid, listed.createtxg) == (mark, s1.guid, s1.createtxg)

    src.path(src_root, "b").write_bytes(os.urandom(50_000))
    await src.zfs.snapshot(src_root, "s2")
    await pipe(src.zfs.send(f"{src_root}@s2", base=mark), dst.zfs.receive(target))
    assert await guid(dst, target, "s2") == await guid(src, src_root, "s2")
    assert tree(dst, target) == tree(src, src_root)

    await src.zfs.destroy_bookmark(src_root, "s1")
    assert await src.zfs.list_bookmarks(src_root) == []


async def test_missing_features_are_refused_as_unsupported(
    zfs_node: ZfsNode, src_root: str
) -> None:
    caps = await zfs_node.zfs.capabilities()
    missing = [f for f in FEATURES if not getattr(caps, f)]
    if not missing:
        pytest.skip(f"{caps.implementation} {caps.version} has all of {', '.join(FEATURES)}")
    zfs = zfs_node.zfs
    await zfs.snapshot(src_root, "s1")
    snap = f"{src_root}@s1"
    if not caps.resume_tokens:
        assert await zfs.resume_token(src_root) is None
        with pytest.raises(Unsupported):
            await zfs.abort_resumable_receive(src_root)
        with pytest.raises(Unsupported):
            await zfs.describe_resume_token("1-abc-10-789c")
    if not caps.holds:
        with pytest.raises(Unsupported):
            await zfs.hold(snap, "zflock-base")
        with pytest.raises(Unsupported):
            await zfs.holds(snap)
    if not caps.bookmarks:
        with pytest.raises(Unsupported):
            await zfs.bookmark(snap, "b1")
        with pytest.raises(Unsupported):
            await zfs.list_bookmarks(src_root)
    if not caps.send_estimates:
        assert await zfs.estimate_send_size(snap) is None


def test_probe_sees_bookmarks_behind_openzfs_21_usage_text() -> None:
    # OpenZFS 2.1.11's real answer to the probe: the error, then its usage.
    from zflock.zfs import Completed, decide_capabilities
    from zflock.zfs.probe import PROBE_COMMANDS

    def done(name: str, rc: int, stderr: str) -> Completed:
        return Completed(
            argv=PROBE_COMMANDS[name], returncode=rc, stdout=b"", stderr=stderr.encode()
        )

    results = {n: done(n, 1, "cannot open 'x': dataset does not exist\n") for n in PROBE_COMMANDS}
    results["version"] = Completed(
        argv=PROBE_COMMANDS["version"], returncode=0, stdout=b"zfs-2.1.11-1\n", stderr=b""
    )
    results["bookmarks"] = done(
        "bookmarks",
        1,
        "source zflock-probe-nonexistent/probe@x does not exist\nusage:\n\tbookmark <snapshot>\n",
    )
    assert decide_capabilities(results).bookmarks is True
    results["bookmarks"] = done("bookmarks", 2, "unrecognized command 'bookmark'\nusage: zfs\n")
    assert decide_capabilities(results).bookmarks is False
