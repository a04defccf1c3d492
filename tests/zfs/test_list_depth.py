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


async def test_dataset_state_reads_properties_and_snapshots_in_one_command(
    zfs_node: ZfsNode, src_root: str
) -> None:
    """What a replica's every check reads (replication/zfs_endpoint.py): the dataset's
    own properties, which of them are set on it, and its snapshots as list_snapshots
    has them; a child's snapshots and the snapshots' inherited rows are not mixed in."""
    zfs = zfs_node.zfs
    vol = f"{src_root}/v"
    await zfs.create(vol, {"zflock:volume": "v"})
    await zfs.create(f"{vol}/child", parents=True)
    await zfs.set(vol, {"canmount": "noauto"})
    await zfs.snapshot(vol, "s1")
    await zfs.snapshot(f"{vol}/child", "c1")
    await zfs.set(vol, {"zflock:volume": "renamed"})
    await zfs.snapshot(vol, "s2")
    state = await zfs.dataset_state(vol, ["zflock:volume", "zflock:epoch", "canmount", "atime"])
    assert state is not None
    assert dict(state.values) == {
        "zflock:volume": "renamed",
        "zflock:epoch": None,
        "canmount": "noauto",
        "atime": "on",
    }
    assert state.is_local("canmount", "noauto") and state.is_local("zflock:volume", "renamed")
    assert not state.is_local("atime", "on")  # the default, not set on the dataset
    assert state.snapshots == await zfs.list_snapshots(vol)
    assert [s.name for s in state.snapshots] == ["s1", "s2"]
    assert await zfs.dataset_state(f"{src_root}/absent", ["zflock:volume"]) is None


async def test_dataset_state_with_reads_only_the_named_snapshots(
    zfs_node: ZfsNode, src_root: str
) -> None:
    """What a replica reads around an incremental receive (zfs_endpoint.receive): the
    dataset's properties as `dataset_state` has them and only the snapshots named, by
    name, in one command; every snapshot when a named one is missing; None when the
    dataset is."""
    zfs = zfs_node.zfs
    vol = f"{src_root}/w"
    await zfs.create(vol, {"zflock:volume": "w"})
    for snap in ("s1", "s2", "s3"):
        await zfs.snapshot(vol, snap)
    props = ["zflock:volume", "canmount", "mounted"]
    full = await zfs.dataset_state(vol, props)
    assert full is not None
    by_name = {s.name: s for s in full.snapshots}

    one = await zfs.dataset_state_with(vol, props, ["s2"])
    assert one is not None
    assert one.values == full.values and one.local == full.local
    assert [(s.name, s.guid, s.creation) for s in one.snapshots] == [
        ("s2", by_name["s2"].guid, by_name["s2"].creation)
    ]
    two = await zfs.dataset_state_with(vol, props, ["s3", "s1"])
    assert two is not None
    assert [s.guid for s in two.snapshots] == [by_name["s1"].guid, by_name["s3"].guid]

    missing = await zfs.dataset_state_with(vol, props, ["s2", "gone"])
    assert missing is not None
    assert [s.name for s in missing.snapshots] == ["s1", "s2", "s3"]
    assert await zfs.dataset_state_with(f"{src_root}/absent", props, ["s1"]) is None
