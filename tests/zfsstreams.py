"""What ZFS stream tests share (tests/zfs and tests/replication): asking the probe for a
feature, a stream as bytes, a dataset's files, snapshot GUIDs, and a cut resumable receive."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ZfsNode, native_zfs_tier
from zflock.zfs import ZfsError


async def need(node: ZfsNode, feature: str) -> None:
    """Skip where the probe says `feature` is missing (zfs-fuse); fail in the OpenZFS tier."""
    caps = await node.zfs.capabilities()
    if getattr(caps, feature):
        return
    if native_zfs_tier():
        pytest.fail(f"OpenZFS tier, but the probe says {feature} is unsupported: {caps}")
    pytest.skip(f"{caps.implementation} lacks {feature} (capability probe)")


async def send_bytes(node: ZfsNode, snapshot: str, base: str | None = None) -> bytes:
    out = bytearray()
    async with node.zfs.send(snapshot, base=base) as stream:
        async for chunk in stream:
            out += chunk
    return bytes(out)


def tree(node: ZfsNode, dataset: str) -> dict[str, bytes]:
    """Every file of a mounted dataset, by relative path."""
    root = node.path(dataset)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


async def guid(node: ZfsNode, dataset: str, snapname: str) -> int:
    return next(s.guid for s in await node.zfs.list_snapshots(dataset) if s.name == snapname)


async def random_snapshot(node: ZfsNode, dataset: str, size: int, snapname: str = "s1") -> None:
    """Write `size` random bytes to data.bin in `dataset`, then snapshot it."""
    node.path(dataset, "data.bin").write_bytes(os.urandom(size))
    await node.zfs.snapshot(dataset, snapname)


async def cut_resumable_receive(
    src: ZfsNode, snapshot: str, dst: ZfsNode, target: str, *, fraction: float = 0.5
) -> tuple[bytes, str]:
    """Receive the first `fraction` of `snapshot`'s full stream into `target` with -s, as
    a dropped connection would: (the whole stream, the resume token ZFS offers)."""
    stream = await send_bytes(src, snapshot)
    with pytest.raises(ZfsError):
        async with dst.zfs.receive(target, resumable=True) as recv:
            await recv.write(stream[: int(len(stream) * fraction)])
    token = await dst.zfs.resume_token(target)
    assert token, "a cut resumable receive must leave a receive_resume_token"
    return stream, token
