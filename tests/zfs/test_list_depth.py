"""`list_datasets(depth=1)`: a pool root's copies without their snapshots, as the
replication scheduler's rescan reads them (one `zfs get` that stays cheap however
many snapshots each copy holds)."""

from __future__ import annotations

from tests.conftest import ZfsNode


async def test_depth_one_reads_children_but_not_their_snapshots(
    zfs_node: ZfsNode, src_root: str
) -> None:
    zfs = zfs_node.zfs
    await zfs.create(f"{src_root}/a", {"zflock:volume": "a"})
    await zfs.create(f"{src_root}/a/deeper", parents=True)
    await zfs.snapshot(f"{src_root}/a", "s1")
    await zfs.snapshot(f"{src_root}/a", "s2")
    everything = {
        d.name
        for d in await zfs.list_datasets(
            src_root, ["zflock:volume"], types=("filesystem", "snapshot")
        )
    }
    assert f"{src_root}/a@s1" in everything  # without depth the snapshots are walked
    found = await zfs.list_datasets(
        src_root, ["zflock:volume"], types=("filesystem", "snapshot"), depth=1
    )
    assert {d.name: d.type for d in found} == {
        src_root: "filesystem",
        f"{src_root}/a": "filesystem",
    }
    assert {d.name: dict(d.properties) for d in found}[f"{src_root}/a"] == {"zflock:volume": "a"}
