"""send -> receive between two independent ZFS nodes, byte for byte."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.conftest import ZfsNode
from tests.zfsstreams import tree
from zflock.lab.zfsfuse import pid_alive
from zflock.zfs import (
    DatasetExists,
    DatasetNotFound,
    DestinationModified,
    NoMatchingSnapshot,
    StreamMismatch,
    Unsupported,
    ZfsError,
    pipe,
)


async def transfer(src: ZfsNode, snapshot: str, dst: ZfsNode, target: str, **kwargs: object) -> int:
    base = kwargs.pop("base", None)
    intermediates = bool(kwargs.pop("intermediates", False))
    return await pipe(
        src.zfs.send(snapshot, base=base, intermediates=intermediates),  # type: ignore[arg-type]
        dst.zfs.receive(target, **kwargs),  # type: ignore[arg-type]
    )


async def test_full_then_incremental_i_and_big_i(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    src.path(vol, "a.bin").write_bytes(os.urandom(300_000))
    (src.path(vol, "dir")).mkdir()
    src.path(vol, "dir", "b.txt").write_bytes(b"hello\n")
    await src.zfs.snapshot(vol, "s1")

    progress: list[int] = []
    copied = await pipe(
        src.zfs.send(f"{vol}@s1"), dst.zfs.receive(target), on_progress=progress.append
    )
    assert copied > 300_000
    assert progress and progress[-1] == copied and progress == sorted(progress)
    # A replica is read-only: reading it must not count as a modification
    # (atime), or the next incremental is refused as DestinationModified.
    await dst.zfs.set(target, {"readonly": "on"})
    assert tree(dst, target) == tree(src, vol)

    # -i: one step.
    src.path(vol, "a.bin").write_bytes(os.urandom(100_000))
    await src.zfs.snapshot(vol, "s2")
    await transfer(src, f"{vol}@s2", dst, target, base=f"{vol}@s1")
    assert tree(dst, target) == tree(src, vol)

    # -I: two snapshots in one stream, intermediate included.
    src.path(vol, "c.bin").write_bytes(os.urandom(50_000))
    await src.zfs.snapshot(vol, "s3")
    src.path(vol, "dir", "b.txt").unlink()
    await src.zfs.snapshot(vol, "s4")
    await transfer(src, f"{vol}@s4", dst, target, base=f"{vol}@s2", intermediates=True)
    assert tree(dst, target) == tree(src, vol)

    src_snaps = await src.zfs.list_snapshots(vol)
    dst_snaps = await dst.zfs.list_snapshots(target)
    assert [(s.name, s.guid) for s in dst_snaps] == [(s.name, s.guid) for s in src_snaps]
    assert [s.name for s in dst_snaps] == ["s1", "s2", "s3", "s4"]


async def test_receive_refuses_modified_destination_unless_forced(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    src.path(vol, "f").write_bytes(b"v1")
    await src.zfs.snapshot(vol, "s1")
    await transfer(src, f"{vol}@s1", dst, target)
    src.path(vol, "f").write_bytes(b"v2")
    await src.zfs.snapshot(vol, "s2")

    dst.path(target, "local-change").write_bytes(b"diverged")
    with pytest.raises(DestinationModified) as info:
        await transfer(src, f"{vol}@s2", dst, target, base=f"{vol}@s1")
    assert isinstance(info.value, StreamMismatch)
    assert "modified" in info.value.stderr
    assert "-F" not in info.value.argv
    assert dst.path(target, "local-change").exists()  # nothing was rolled back

    await transfer(src, f"{vol}@s2", dst, target, base=f"{vol}@s1", force=True)
    assert tree(dst, target) == {"f": b"v2"}


async def test_incremental_with_wrong_base_is_no_matching_snapshot(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    await src.zfs.create(vol)
    for name in ("s1", "s2", "s3"):
        src.path(vol, "f").write_bytes(name.encode())
        await src.zfs.snapshot(vol, name)
    await transfer(src, f"{vol}@s1", dst, target)
    with pytest.raises(NoMatchingSnapshot) as info:
        await transfer(src, f"{vol}@s3", dst, target, base=f"{vol}@s2")
    assert isinstance(info.value, StreamMismatch)
    assert [s.name for s in await dst.zfs.list_snapshots(target)] == ["s1"]


async def test_full_receive_into_existing_is_dataset_exists(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await src.zfs.snapshot(src_root, "s1")
    await dst.zfs.create(f"{dst_root}/taken")
    with pytest.raises(DatasetExists):
        await transfer(src, f"{src_root}@s1", dst, f"{dst_root}/taken")


async def test_send_of_missing_snapshot_raises_typed_error_with_stderr(
    zfs_node: ZfsNode, src_root: str
) -> None:
    stream = zfs_node.zfs.send(f"{src_root}@nope")
    with pytest.raises(DatasetNotFound) as info:
        async with stream as s:
            assert [chunk async for chunk in s] == []
    assert "does not exist" in info.value.stderr
    assert info.value.argv[:2] == ("zfs", "send")
    assert stream.pid is not None and not pid_alive(stream.pid)


async def test_send_with_base_newer_than_snapshot_is_mismatch(
    zfs_node: ZfsNode, src_root: str
) -> None:
    await zfs_node.zfs.snapshot(src_root, "s1")
    await zfs_node.zfs.snapshot(src_root, "s2")
    with pytest.raises(StreamMismatch):
        async with zfs_node.zfs.send(f"{src_root}@s1", base=f"{src_root}@s2") as s:
            while await s.read():
                pass


async def test_failed_send_aborts_receive_without_a_trace(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    recv = dst.zfs.receive(f"{dst_root}/never")
    with pytest.raises(DatasetNotFound):
        await pipe(src.zfs.send(f"{src_root}@missing"), recv)
    assert recv.pid is not None and not pid_alive(recv.pid)
    assert await eventually_absent(dst, f"{dst_root}/never")


async def big_snapshot(node: ZfsNode, dataset: str, size: int = 8 << 20) -> str:
    node.path(dataset, "big.bin").write_bytes(os.urandom(size))
    await node.zfs.snapshot(dataset, "big")
    return f"{dataset}@big"


async def test_abandoned_send_leaves_no_process(zfs_node: ZfsNode, src_root: str) -> None:
    snap = await big_snapshot(zfs_node, src_root)
    stream = zfs_node.zfs.send(snap)
    async with stream as s:
        first = await s.read(65536)
        assert first
        pid = stream.pid
        assert pid is not None and pid_alive(pid)
        # leave half way
    assert not pid_alive(pid)
    # The daemon stopped the stream too: a new full send completes.
    total = 0
    async with zfs_node.zfs.send(snap) as s:
        async for chunk in s:
            total += len(chunk)
    assert total > 8 << 20


async def test_cancelled_send_leaves_no_process(zfs_node: ZfsNode, src_root: str) -> None:
    snap = await big_snapshot(zfs_node, src_root, 4 << 20)
    stream = zfs_node.zfs.send(snap)
    started = asyncio.Event()

    async def consume() -> None:
        async with stream as s:
            await s.read(1024)
            started.set()
            await asyncio.sleep(3600)  # never reads on: the pipe fills up

    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    assert started.is_set(), task.exception()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.pid is not None and not pid_alive(stream.pid)


async def test_aborted_receive_leaves_no_process_and_no_dataset(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    snap = await big_snapshot(src, src_root, 4 << 20)
    target = f"{dst_root}/partial"
    recv = dst.zfs.receive(target)
    async with src.zfs.send(snap) as s, recv as r:
        await r.write(await s.read(256 * 1024))
        pid = recv.pid
        assert pid is not None
        await r.abort()
    assert not pid_alive(pid)
    # zfs-fuse's daemon, not the killed client, runs the receive: it cleans
    # up the partial dataset on EOF shortly *after* the client is gone.
    assert await eventually_absent(dst, target)
    # The destination is usable: the whole stream now goes through.
    await transfer(src, snap, dst, target)
    assert dst.path(target, "big.bin").read_bytes() == src.path(src_root, "big.bin").read_bytes()


async def eventually_absent(node: ZfsNode, name: str, seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while await node.zfs.exists(name):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_exception_inside_receive_block_kills_it(zfs_node2: ZfsNode, dst_root: str) -> None:
    recv = zfs_node2.zfs.receive(f"{dst_root}/x")
    with pytest.raises(RuntimeError, match="boom"):
        async with recv as r:
            await r.write(b"\0" * 1024)
            raise RuntimeError("boom")
    assert recv.pid is not None and not pid_alive(recv.pid)
    assert await eventually_absent(zfs_node2, f"{dst_root}/x")


async def test_garbage_stream_is_a_zfs_error(zfs_node2: ZfsNode, dst_root: str) -> None:
    with pytest.raises(ZfsError, match=r"invalid stream|bad magic"):
        async with zfs_node2.zfs.receive(f"{dst_root}/x") as r:
            await r.write(os.urandom(4096))


async def test_receive_unmounted_matches_capabilities(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    await src.zfs.snapshot(src_root, "s1")
    target = f"{dst_root}/u"
    if not (await dst.zfs.capabilities()).receive_unmounted:
        with pytest.raises(Unsupported):
            await transfer(src, f"{src_root}@s1", dst, target, unmounted=True)
        return
    await transfer(src, f"{src_root}@s1", dst, target, unmounted=True)
    assert await dst.zfs.exists(target)
    assert not await dst.zfs.is_mounted(target)


async def test_resumable_receive_and_resume_token_follow_capabilities(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    if (await dst.zfs.capabilities()).resume_tokens:
        pytest.skip("resume tokens are supported here; covered by the resume tests")
    with pytest.raises(Unsupported, match="resume tokens"):
        async with dst.zfs.receive(f"{dst_root}/r", resumable=True):
            pass
    with pytest.raises(Unsupported):
        async with src.zfs.send(f"{src_root}@x", resume_token="1-abc-def"):
            pass
    assert not await dst.zfs.exists(f"{dst_root}/r")


async def test_estimate_send_size(zfs_node: ZfsNode, src_root: str) -> None:
    zfs_node.path(src_root, "f").write_bytes(os.urandom(200_000))
    await zfs_node.zfs.snapshot(src_root, "s1")
    estimate = await zfs_node.zfs.estimate_send_size(f"{src_root}@s1")
    if (await zfs_node.zfs.capabilities()).send_estimates:
        assert estimate is not None and estimate > 200_000
    else:
        assert estimate is None
