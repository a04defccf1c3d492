"""Dropping a mounted volume's pages from the page cache before a fence (zfs/page_cache.py),
on a real zfs-fuse mount, with residency read by util-linux's `fincore`.

The files are untrusted: the walk must drop the volume's own regular files, in
subdirectories too, and nothing else: not the files of another filesystem mounted
below it, not what a symlink points to, and never open a FIFO (it would block: the
walk runs in a subprocess with a timeout, so a regression fails instead of hanging).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ZfsNode
from zflock.zfs.holders import mount_device

DROP = """
import json, sys
from zflock.zfs.page_cache import drop_cached_pages
d = drop_cached_pages(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
print(json.dumps({"files": d.files, "complete": d.complete}))
"""


def resident(path: Path) -> int:
    """Bytes of `path` in the page cache."""
    r = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)],
                       capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return int(r.stdout.split()[0])


def write(path: Path, mib: int) -> None:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def drop(mountpoint: Path, budget: float = 10.0) -> dict[str, object]:
    device = mount_device(str(mountpoint))
    assert device is not None
    r = subprocess.run([sys.executable, "-c", DROP, str(mountpoint), str(device), str(budget)],
                       capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    answer: dict[str, object] = json.loads(r.stdout)
    return answer


async def skip_unless_the_fence_unmounts(node: ZfsNode) -> None:
    if (await node.zfs.capabilities()).readonly_fences_open_files:
        pytest.skip("OpenZFS: the fence does not unmount, so nothing drops the page cache")


async def test_the_volumes_own_files_are_dropped_and_nothing_else(
    zfs_node: ZfsNode, src_root: str
) -> None:
    await skip_unless_the_fence_unmounts(zfs_node)
    zfs = zfs_node.zfs
    vol, below = f"{src_root}/vol", f"{src_root}/vol/below"
    await zfs.create(vol)
    await zfs.create(below)  # another filesystem, mounted inside the volume
    mountpoint = zfs_node.path(vol)
    (mountpoint / "sub").mkdir()
    mine = [mountpoint / "big", mountpoint / "sub" / "small"]
    write(mine[0], 16)
    write(mine[1], 1)
    other = zfs_node.path(below, "other")
    write(other, 4)
    os.symlink(other, mountpoint / "link")
    os.mkfifo(mountpoint / "fifo")
    assert all(resident(p) > 0 for p in [*mine, other])

    assert drop(mountpoint) == {"files": 2, "complete": True}
    assert [resident(p) for p in mine] == [0, 0]
    assert resident(other) > 0  # neither the mount below nor the symlink's target


async def test_the_walk_stops_at_its_budget(zfs_node: ZfsNode, src_root: str) -> None:
    await skip_unless_the_fence_unmounts(zfs_node)
    vol = f"{src_root}/vol"
    await zfs_node.zfs.create(vol)
    path = zfs_node.path(vol, "f")
    write(path, 4)
    assert drop(zfs_node.path(vol), budget=0.0) == {"files": 0, "complete": False}
    assert resident(path) > 0
