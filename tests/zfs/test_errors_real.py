"""Every typed error, triggered for real on the node's ZFS."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import ZfsNode
from tests.zfs.test_streams import transfer
from zflock.zfs import (
    DatasetBusy,
    OutOfSpace,
    PermissionDenied,
    Runner,
    Unsupported,
    Zfs,
)


async def test_unmount_with_open_file_is_busy(zfs_node: ZfsNode, src_root: str) -> None:
    vol = f"{src_root}/b"
    await zfs_node.zfs.create(vol)
    with open(zfs_node.path(vol, "held"), "wb") as held:  # noqa: ASYNC230 -- held open on purpose
        held.write(b"x")
        with pytest.raises(DatasetBusy) as info:
            await zfs_node.zfs.unmount(vol)
        assert "busy" in info.value.stderr
        with pytest.raises(DatasetBusy):
            await zfs_node.zfs.destroy(vol)
    assert await zfs_node.zfs.is_mounted(vol)
    await zfs_node.zfs.unmount(vol)  # closed: now it works
    await zfs_node.zfs.destroy(vol)


async def test_receive_over_quota_is_out_of_space(
    zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str
) -> None:
    src, dst = zfs_pair
    src.path(src_root, "big").write_bytes(os.urandom(3 << 20))
    await src.zfs.snapshot(src_root, "s1")
    await dst.zfs.create(f"{dst_root}/small", {"quota": str(1 << 20)})
    with pytest.raises(OutOfSpace) as info:
        await transfer(src, f"{src_root}@s1", dst, f"{dst_root}/small/vol")
    assert "space" in info.value.stderr


async def test_not_root_is_permission_denied(zfs_node: ZfsNode, src_root: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    nobody = Zfs(Runner((*zfs_node.prefix, "setpriv", "--reuid=65534", "--regid=65534",
                         "--clear-groups")))  # fmt: skip
    with pytest.raises(PermissionDenied) as info:
        await nobody.create(f"{src_root}/denied")
    assert "ermission denied" in info.value.stderr
    assert not await zfs_node.zfs.exists(f"{src_root}/denied")


async def test_unknown_property_is_unsupported(zfs_node: ZfsNode, src_root: str) -> None:
    with pytest.raises(Unsupported):
        await zfs_node.zfs.get(src_root, ["nosuchnativeprop"])
