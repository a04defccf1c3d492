"""The pure decisions of a move's preflight and recovery (agent/move_preflight.py,
agent/move_recovery.py): space, the plan's wording, the highest epoch peers report."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.move_preflight import SPACE_MARGIN, MovePlan, enough_space, space_needed
from zflock.agent.move_recovery import highest_epoch
from zflock.replication.model import ReplicaInfo, SnapRef
from zflock.rpc import messages as m


def replica(*sizes: int | None) -> ReplicaInfo:
    snaps = [SnapRef(name=f"s{i}", guid=i + 1, order=i + 1, size=s) for i, s in enumerate(sizes)]
    return ReplicaInfo(exists=True, snapshots=snaps)


def test_space_needed_is_all_without_a_replica() -> None:
    assert space_needed(1000, ReplicaInfo(exists=False)) == 1000
    assert space_needed(1000, replica()) == 1000  # a replica without snapshots


def test_space_needed_is_what_the_newest_replica_snapshot_lacks() -> None:
    assert space_needed(1000, replica(100, 600)) == 400
    assert space_needed(1000, replica(1500)) == 0
    assert space_needed(1000, replica(None)) == 1000  # size unknown: all of it


@given(st.integers(0, 1 << 50), st.lists(st.one_of(st.none(), st.integers(0, 1 << 50)), max_size=4))
def test_space_needed_is_never_negative_nor_more_than_the_copy(
    referenced: int, sizes: list[int | None]
) -> None:
    assert 0 <= space_needed(referenced, replica(*sizes)) <= referenced


def test_enough_space_keeps_the_margin_free() -> None:
    free = 1000
    assert enough_space(int(free * (1 - SPACE_MARGIN)), free)
    assert not enough_space(int(free * (1 - SPACE_MARGIN)) + 1, free)
    assert enough_space(0, 0)


def plan(**changes: object) -> MovePlan:
    fields: dict[str, object] = dict(
        volume="v", source="node1", destination="node2", epoch=3, mountpoint="/zflock/v",
        referenced=5 << 20, replica_snapshots=None, pool_free=1 << 30, needed=5 << 20,
        max_downtime=1.0, max_rounds=8, pre_hooks=1, post_hooks=0, destroy_source=False,
    )  # fmt: skip
    fields.update(changes)
    return MovePlan(**fields)  # type: ignore[arg-type]


def test_plan_lines_say_what_the_move_will_do() -> None:
    lines = plan().lines()
    assert lines[0] == "pre-copy round 1: full send of about 5.0 MiB (no replica on node2)"
    assert "at most 8 rounds" in lines[1]
    assert "pre-cutover hooks (1)" in lines[2] and "fence node1" in lines[2]
    assert "promote node2 to epoch 4, mount at /zflock/v" in lines[3]
    assert lines[4] == "then keep as a read-only replica the copy on node1"
    assert lines[5].startswith("space: node2 has 1.0 GiB free")


def test_plan_lines_with_a_replica_and_destroy_source() -> None:
    lines = plan(replica_snapshots=2, destroy_source=True).lines()
    assert (
        lines[0] == "pre-copy round 1: incremental from the replica on node2 (2 snapshot(s) there)"
    )
    assert lines[4] == "then destroy the copy on node1"


def copies(*pairs: tuple[str, int]) -> m.VolumeList:
    return m.VolumeList(volumes=[volume_info(vid, epoch) for vid, epoch in pairs])


def volume_info(vid: str, epoch: int) -> m.VolumeInfo:
    return m.VolumeInfo(
        name="v", node="n", id=vid, role="replica", epoch=epoch, origin="",
        mountpoint="/zflock/v", mounted=False, readonly=True, used=0, referenced=0,
        quota=None, snapshots=0, latest_snapshot=None, latest_snapshot_time=None,
    )  # fmt: skip


def test_highest_epoch_counts_only_this_volume_and_answers() -> None:
    answers = [copies(("a", 3), ("b", 9)), None, copies(("a", 5)), copies()]
    assert highest_epoch(answers, "a") == 5
    assert highest_epoch(answers, "c") == 0
    assert highest_epoch([None, None], "a") == 0
    assert highest_epoch([], "a") == 0
