"""A zflock snapshot on real ZFS, through Volumes alone (no agents).

Every replication run and every move's final delta (inside the downtime) takes one,
so it is one command: the names carry the sequence, and `zflock:seq` on the dataset
is only a floor, not raised with each snapshot (agent/volumes.py, next_sequence).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RecordingRunner, ZfsNode
from zflock.agent.locks import VolumeLocks
from zflock.agent.names import Names
from zflock.agent.volumes import Volumes
from zflock.cluster.ownership import ZFLOCK_PROPERTIES
from zflock.replication.naming import parse_snapshot_name


async def solo(zfs_node: ZfsNode, root: str, tmp_path: Path) -> tuple[Volumes, RecordingRunner]:
    config = zfs_node.solo_config(root, tmp_path)
    zfs, runner = await zfs_node.recording()
    volumes = Volumes(config, zfs)
    await Names(config, volumes.zfs, volumes, VolumeLocks(), lambda: None).create(
        "vol", None, wait=True
    )
    return volumes, runner


def sequence(snapshot: str) -> int:
    parsed = parse_snapshot_name(snapshot)
    assert parsed is not None, snapshot
    return parsed[1]


async def test_a_snapshot_is_one_command_and_its_name_carries_the_sequence(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    volumes, runner = await solo(zfs_node, src_root, tmp_path)
    dataset = f"{src_root}/vol"
    first = await volumes.snapshot("vol")
    read = await volumes.zfs.dataset_state(dataset, ZFLOCK_PROPERTIES)
    assert read is not None
    runner.seen.clear()
    taken = await volumes.snapshot_known("vol", read)
    assert [argv[1] for argv in runner.seen] == ["snapshot"], runner.seen
    assert (sequence(first.snapshot), sequence(taken)) == (1, 2)
    # The floor is not raised: what numbers the next snapshot is the names.
    assert await volumes.zfs.get(dataset, ["zflock:seq"]) == {"zflock:seq": "0"}
    third = await volumes.snapshot("vol")
    assert sequence(third.snapshot) == 3


async def test_a_higher_floor_on_the_dataset_still_counts(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    """A copy whose floor is above its names (an older version raised it with every
    snapshot, and some were destroyed since) never reuses a number below it."""
    volumes, _ = await solo(zfs_node, src_root, tmp_path)
    await volumes.snapshot("vol")
    await volumes.zfs.set(f"{src_root}/vol", {"zflock:seq": "7"})
    assert sequence((await volumes.snapshot("vol")).snapshot) == 8
    assert sequence((await volumes.snapshot("vol")).snapshot) == 9
