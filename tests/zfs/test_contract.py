"""The Zfs contract against a real pool: datasets, snapshots, properties, mounts.

Runs against whatever `zfs_node` provides (zfs-fuse here). Nothing is
assumed about the implementation: where behaviour depends on a feature, the
test asks `await zfs.capabilities()`.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import ZfsNode
from zflock.zfs import (
    Dataset,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    InvalidName,
    ZfsError,
)


async def test_create_exists_and_list(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    await zfs.create(f"{src_root}/vol", {"zflock:volume": "vol", "compression": "off"})
    await zfs.create(f"{src_root}/deep/er/vol", parents=True)
    assert await zfs.exists(f"{src_root}/vol")
    assert not await zfs.exists(f"{src_root}/nope")

    found = await zfs.list_datasets(src_root, ["zflock:volume", "compression", "used"])
    by_name = {d.name: d for d in found}
    assert set(by_name) == {
        src_root,
        f"{src_root}/vol",
        f"{src_root}/deep",
        f"{src_root}/deep/er",
        f"{src_root}/deep/er/vol",
    }
    vol = by_name[f"{src_root}/vol"]
    assert vol.type == "filesystem"
    assert vol.properties["zflock:volume"] == "vol"
    assert vol.properties["compression"] == "off"
    assert int(vol.properties["used"]) > 0
    # An unset user property is absent, not "-".
    assert "zflock:volume" not in by_name[src_root].properties

    only_root = await zfs.list_datasets(src_root, recursive=False)
    assert only_root == [Dataset(name=src_root, type="filesystem", properties={})]


async def test_list_datasets_types_include_snapshots(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    await zfs.snapshot(src_root, "s1")
    kinds = {
        d.name: d.type for d in await zfs.list_datasets(src_root, types=("filesystem", "snapshot"))
    }
    assert kinds == {src_root: "filesystem", f"{src_root}@s1": "snapshot"}
    only_fs = await zfs.list_datasets(src_root)
    assert [d.name for d in only_fs] == [src_root]


async def test_snapshots_in_creation_order_with_guids(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    caps = await zfs.capabilities()
    # Names chosen so alphabetical order differs from creation order.
    taken = []
    for i, name in enumerate(["zz", "aa", "mm"]):
        zfs_node.path(src_root, f"f{i}").write_bytes(b"x" * 1000 * (i + 1))
        taken.append(await zfs.snapshot(src_root, name, {"zflock:seq": str(i)}))
    await zfs.create(f"{src_root}/child")
    await zfs.snapshot(f"{src_root}/child", "other")  # a child's snapshot is not ours

    snaps = await zfs.list_snapshots(src_root)
    assert [s.name for s in snaps] == ["zz", "aa", "mm"]
    assert [s.index for s in snaps] == [0, 1, 2]
    # snapshot() returns the record as listed then ("used" grows as data changes).
    key = [(s.name, s.guid, s.createtxg, s.creation, s.index) for s in snaps]
    assert key == [(s.name, s.guid, s.createtxg, s.creation, s.index) for s in taken]
    assert len({s.guid for s in snaps}) == 3
    assert all(s.guid > 0 and s.creation > 1_000_000_000 for s in snaps)
    assert all(s.referenced > 0 and s.used >= 0 for s in snaps)
    assert snaps[0].full_name == f"{src_root}@zz"
    if caps.createtxg:
        txgs = [s.createtxg for s in snaps]
        assert all(isinstance(t, int) for t in txgs)
        assert txgs == sorted(txgs) and len(set(txgs)) == 3
    else:
        assert all(s.createtxg is None for s in snaps)
    props = await zfs.get(snaps[1].full_name, ["zflock:seq", "guid"])
    assert props == {"zflock:seq": "1", "guid": str(snaps[1].guid)}


async def test_get_set_inherit_user_properties(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    assert await zfs.get(src_root, ["zflock:epoch", "zflock:role"]) == {
        "zflock:epoch": None,
        "zflock:role": None,
    }
    await zfs.set(src_root, {"zflock:epoch": "3", "zflock:role": "primary", "atime": "off"})
    got = await zfs.get(src_root, ["zflock:epoch", "zflock:role", "atime", "guid"])
    assert got["zflock:epoch"] == "3"
    assert got["zflock:role"] == "primary"
    assert got["atime"] == "off"
    assert got["guid"] is not None and int(got["guid"]) > 0

    await zfs.set(src_root, {"zflock:role": "-"})  # a literal "-" is a value, not "unset"
    assert (await zfs.get(src_root, ["zflock:role"]))["zflock:role"] == "-"

    await zfs.inherit(src_root, "zflock:epoch")
    await zfs.inherit(src_root, "zflock:role")
    await zfs.inherit(src_root, "atime")
    got = await zfs.get(src_root, ["zflock:epoch", "zflock:role", "atime"])
    assert got == {"zflock:epoch": None, "zflock:role": None, "atime": "on"}

    # A child inherits a user property set on its parent.
    await zfs.create(f"{src_root}/c")
    await zfs.set(src_root, {"zflock:origin": "node1"})
    assert (await zfs.get(f"{src_root}/c", ["zflock:origin"]))["zflock:origin"] == "node1"


async def test_writes_in_steps_and_at_once_land(zfs_node: ZfsNode, src_root: str) -> None:
    """The promote's writes (several commands at once on zfs-fuse) all land."""
    zfs = zfs_node.zfs
    await zfs.set(src_root, {"zflock:move": "m", "zflock:stale": "s"})
    await zfs.set_in_steps(
        src_root,
        [{"zflock:promoted-by": "m/2"}, {"zflock:epoch": "2", "zflock:role": "primary"}],
    )
    await zfs.write_at_once(
        src_root, {"atime": "off", "zflock:x": "1"}, clear=["zflock:move", "zflock:stale"]
    )
    got = await zfs.get(src_root, ["zflock:promoted-by", "zflock:epoch", "zflock:role", "atime",
                                   "zflock:x", "zflock:move", "zflock:stale"])  # fmt: skip
    assert got == {
        "zflock:promoted-by": "m/2", "zflock:epoch": "2", "zflock:role": "primary",
        "atime": "off", "zflock:x": "1", "zflock:move": None, "zflock:stale": None,
    }  # fmt: skip


async def test_get_numbers_are_exact(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    await zfs.set(src_root, {"quota": "12345678"})
    got = await zfs.get(src_root, ["quota", "guid", "creation"])
    assert got["quota"] == "12345678"
    assert got["guid"] is not None and got["guid"].isdigit()  # never "6.70E"
    assert got["creation"] is not None and got["creation"].isdigit()


async def test_rollback(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    f = zfs_node.path(src_root, "data")
    f.write_bytes(b"one")
    await zfs.snapshot(src_root, "s1")
    f.write_bytes(b"two")
    await zfs.snapshot(src_root, "s2")
    f.write_bytes(b"three")

    await zfs.rollback(src_root, "s2")
    assert f.read_bytes() == b"two"

    with pytest.raises(ZfsError, match="more recent snapshots"):
        await zfs.rollback(src_root, "s1")
    assert [s.name for s in await zfs.list_snapshots(src_root)] == ["s1", "s2"]

    await zfs.rollback(src_root, "s1", destroy_newer=True)
    assert f.read_bytes() == b"one"
    assert [s.name for s in await zfs.list_snapshots(src_root)] == ["s1"]


async def test_rename_dataset_and_snapshot(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    await zfs.create(f"{src_root}/old")
    await zfs.snapshot(f"{src_root}/old", "s1")
    await zfs.rename(f"{src_root}/old", f"{src_root}/new")
    assert not await zfs.exists(f"{src_root}/old")
    assert await zfs.exists(f"{src_root}/new@s1")

    await zfs.rename(f"{src_root}/new@s1", f"{src_root}/new@s2")
    assert [s.name for s in await zfs.list_snapshots(f"{src_root}/new")] == ["s2"]

    with pytest.raises(InvalidName, match="stays in its dataset"):
        await zfs.rename(f"{src_root}/new@s2", f"{src_root}/other@s2")


async def test_destroy_and_destroy_snapshot(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    await zfs.create(f"{src_root}/a")
    await zfs.snapshot(f"{src_root}/a", "s1")
    await zfs.snapshot(f"{src_root}/a", "s2")

    with pytest.raises(InvalidName):
        await zfs.destroy(f"{src_root}/a@s1")  # destroy() never takes a snapshot
    await zfs.destroy_snapshot(f"{src_root}/a", "s1")
    assert [s.name for s in await zfs.list_snapshots(f"{src_root}/a")] == ["s2"]

    with pytest.raises(ZfsError, match=r"children|snapshots"):
        await zfs.destroy(f"{src_root}/a")  # has a snapshot: needs recursive
    await zfs.destroy(f"{src_root}/a", recursive=True)
    assert not await zfs.exists(f"{src_root}/a")

    await zfs.create(f"{src_root}/b")
    await zfs.destroy(f"{src_root}/b")
    assert not await zfs.exists(f"{src_root}/b")


async def test_mount_unmount_is_mounted(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    vol = f"{src_root}/m"
    await zfs.create(vol)
    assert await zfs.is_mounted(vol)
    zfs_node.path(vol, "file").write_bytes(b"data")

    await zfs.unmount(vol)
    assert not await zfs.is_mounted(vol)
    assert not zfs_node.path(vol, "file").exists()

    # Straight after the unmount: zfs-fuse may say "busy" for a moment; mount() retries.
    await zfs.mount(vol)
    assert await zfs.is_mounted(vol)
    assert zfs_node.path(vol, "file").read_bytes() == b"data"

    for _ in range(3):  # and again, quickly, to give the quirk a chance to show
        await zfs.unmount(vol, force=True)
        await zfs.mount(vol)
    assert await zfs.is_mounted(vol)


async def test_typed_not_found_and_exists(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    with pytest.raises(DatasetNotFound) as info:
        await zfs.get(f"{src_root}/nope", ["guid"])
    assert "does not exist" in info.value.stderr
    assert info.value.returncode not in (None, 0)
    assert info.value.argv[:2] == ("zfs", "get")
    with pytest.raises(DatasetNotFound):
        await zfs.destroy(f"{src_root}/nope")
    with pytest.raises(DatasetNotFound):
        await zfs.list_snapshots(f"{src_root}/nope")
    with pytest.raises(DatasetNotFound):
        await zfs.snapshot(f"{src_root}/nope", "s")
    with pytest.raises(DatasetNotFound):
        await zfs.destroy_snapshot(src_root, "nope")
    with pytest.raises(DatasetNotFound):
        await zfs.rollback(src_root, "nope")
    with pytest.raises(DatasetNotFound):
        await zfs.create(f"{src_root}/no/parent")

    await zfs.create(f"{src_root}/x")
    with pytest.raises(DatasetExists):
        await zfs.create(f"{src_root}/x")
    await zfs.snapshot(f"{src_root}/x", "s")
    with pytest.raises(DatasetExists):
        await zfs.snapshot(f"{src_root}/x", "s")
    await zfs.create(f"{src_root}/y")
    with pytest.raises(DatasetExists):
        await zfs.rename(f"{src_root}/y", f"{src_root}/x")


async def test_invalid_names_refused_before_running(zfs_node: ZfsNode, src_root: str) -> None:
    zfs = zfs_node.zfs
    for bad in (f"{src_root}/a;b", f"{src_root}/-x", f"{src_root}/..", f"{src_root}/a b"):
        with pytest.raises(InvalidName):
            await zfs.create(bad)
    with pytest.raises(InvalidName):
        await zfs.set(src_root, {"Zflock:Epoch": "1"})
    with pytest.raises(InvalidName):
        await zfs.set(src_root, {"zflock:epoch": "1\n2"})
    with pytest.raises(InvalidName):
        await zfs.snapshot(src_root, "a@b")
    # Nothing was created by the refused calls.
    assert [d.name for d in await zfs.list_datasets(src_root)] == [src_root]


async def test_a_fence_against_a_file_held_open_for_writing(
    zfs_node: ZfsNode, src_root: str
) -> None:
    """What the move's fence relies on (move/zfs_source.py), on each ZFS. Where
    `readonly_fences_open_files` (OpenZFS), `readonly=on` refuses a write through a
    descriptor opened before it and reads "on" while mounted: the fence needs no
    unmount. Where not (zfs-fuse: such a write and its fsync succeed, found
    2026-12-05), the unmount is what fences, and it is refused as busy for as long
    as that descriptor is open, and succeeds once it is closed: so the fence can
    tell, and refuses. The unmount is refused on both."""
    zfs = zfs_node.zfs
    fences_open_files = (await zfs.capabilities()).readonly_fences_open_files
    vol = f"{src_root}/held"
    await zfs.create(vol)
    path = zfs_node.path(vol, "log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"before\n")
        os.fsync(fd)
        await zfs.set(vol, {"readonly": "on"})
        if fences_open_files:
            with pytest.raises(OSError):
                os.write(fd, b"after\n")
                os.fsync(fd)
            assert (await zfs.get(vol, ["readonly", "mounted"])) == {
                "readonly": "on", "mounted": "yes"
            }  # fmt: skip
        with pytest.raises(DatasetBusy):
            await zfs.unmount(vol)
    finally:
        os.close(fd)
    await zfs.unmount(vol)
    assert (await zfs.get(vol, ["mounted", "readonly"])) == {"mounted": "no", "readonly": "on"}
    await zfs.mount(vol)
    if fences_open_files:
        assert path.read_bytes() == b"before\n"


async def test_readonly_fences_writes(zfs_node: ZfsNode, src_root: str) -> None:
    """readonly=on stops writes at once. (zfs-fuse quirk: while the dataset is
    mounted, `zfs get readonly` reports "off"/"temporary" although writes fail;
    only after an unmount does it show "on". Do not read `readonly` of a mounted
    dataset on zfs-fuse to decide whether it is writable.)"""
    zfs = zfs_node.zfs
    vol = f"{src_root}/ro"
    await zfs.create(vol)
    zfs_node.path(vol, "before").write_bytes(b"ok")
    await zfs.set(vol, {"readonly": "on"})
    with pytest.raises(OSError):
        zfs_node.path(vol, "after").write_bytes(b"refused")
    await zfs.unmount(vol)
    assert (await zfs.get(vol, ["readonly"]))["readonly"] == "on"
    await zfs.mount(vol)
    assert zfs_node.path(vol, "before").read_bytes() == b"ok"
    await zfs.set(vol, {"readonly": "off"})
    zfs_node.path(vol, "after").write_bytes(b"allowed")
