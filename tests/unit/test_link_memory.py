"""What a scheduled link remembers between runs, and when it may not (agent/link_memory.py).

The memory is good only when the run that uses it is the one acquisition of the
volume's lock since the run that left it: any other holder, an action without the
lock, a change while the run ran, a failed run or old age makes the next run read
both copies again.
"""

from __future__ import annotations

from dataclasses import replace

from zflock.agent.link_memory import MAX_AGE, Carried, LinkMemory, after_prune
from zflock.agent.locks import VolumeLocks
from zflock.replication.model import ReplicaInfo, SnapRef
from zflock.zfs import DatasetState
from zflock.zfs.types import Snapshot


def snap(name: str, guid: int, index: int) -> Snapshot:
    return Snapshot("tank/v", name, guid, None, 100 + index, 0, 0, index)


PRIMARY = DatasetState("tank/v", {"zflock:role": "primary"}, frozenset(), [
    snap("a", 1, 0), snap("b", 2, 1), snap("c", 3, 2),
])  # fmt: skip
REPLICA = ReplicaInfo(
    exists=True, managed_volume="v", role="replica", epoch=1,
    resume_token="tok", resume_to_guid=9, modified_since_last_snapshot=True,
)  # fmt: skip
CARRIED = Carried(PRIMARY, REPLICA, resume=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def run(locks: VolumeLocks, memory: LinkMemory, keep: Carried | None = CARRIED,
              volume: str = "v", peer: str = "n2") -> Carried | None:  # fmt: skip
    """One scheduled run: take the lock, recall, (keep), release. What it recalled."""
    async with locks.hold(volume, "scheduled", wait=False):
        carried, recall = memory.recall(volume, peer)
        memory.keep(volume, peer, recall, keep)
    return carried


async def test_the_next_run_starts_from_what_the_last_one_left() -> None:
    locks = VolumeLocks()
    memory = LinkMemory(locks, Clock())
    assert await run(locks, memory) is None  # nothing yet: read both copies
    assert await run(locks, memory) == CARRIED
    assert await run(locks, memory) == CARRIED
    assert len(memory) == 1


async def test_another_holder_of_the_lock_voids_it() -> None:
    locks = VolumeLocks()
    memory = LinkMemory(locks, Clock())
    await run(locks, memory)
    async with locks.hold("v", "snapshot", wait=False):
        pass
    assert await run(locks, memory) is None
    assert await run(locks, memory) == CARRIED  # and the run after that remembers again


async def test_a_change_without_the_lock_voids_it_before_or_during_a_run() -> None:
    locks = VolumeLocks()
    memory = LinkMemory(locks, Clock())
    await run(locks, memory)
    locks.changed("v")  # a self-fence that could not wait for the lock
    assert await run(locks, memory) is None
    async with locks.hold("v", "scheduled", wait=False):  # changed while a run runs
        carried, recall = memory.recall("v", "n2")
        assert carried == CARRIED
        locks.changed("v")
        memory.keep("v", "n2", recall, CARRIED)
    assert await run(locks, memory) is None


async def test_a_failed_run_old_age_and_other_volumes() -> None:
    locks, clock = VolumeLocks(), Clock()
    memory = LinkMemory(locks, clock)
    await run(locks, memory)
    await run(locks, memory, keep=None)  # failed, or ended without knowing both sides
    assert await run(locks, memory) is None
    clock.now += MAX_AGE + 1
    assert await run(locks, memory) is None
    async with locks.hold("other", "move", wait=False):
        pass  # another volume's lock changes nothing here
    assert await run(locks, memory) == CARRIED
    memory.forget("v", "n2")
    assert len(memory) == 0 and locks.taken("v") is None  # no longer counted


async def test_runs_that_each_remember_still_read_whole_every_max_age() -> None:
    """Each run starts from the one before, but the age that counts is since both
    copies were last read whole: so an operator's own change is seen within MAX_AGE."""
    locks, clock = VolumeLocks(), Clock()
    memory = LinkMemory(locks, clock)
    assert await run(locks, memory) is None  # reads whole
    remembered = 0
    while await run(locks, memory) == CARRIED and remembered < 100:
        remembered += 1
        clock.now += 30
    assert remembered == int(MAX_AGE // 30) + 1, remembered
    assert await run(locks, memory) == CARRIED  # it read whole: the count starts again


async def test_two_targets_of_one_volume_void_each_other() -> None:
    """Each run of one target changes the primary (its snapshot, its pruning): the
    other target's memory of it is void (a volume kept on two nodes reads each time)."""
    locks = VolumeLocks()
    memory = LinkMemory(locks, Clock())
    for _ in range(3):
        assert await run(locks, memory, peer="n2") is None
        assert await run(locks, memory, peer="n3") is None


def test_after_prune_drops_what_was_destroyed_and_takes_the_replicas_listing() -> None:
    listed = [SnapRef("b", 2, 0), SnapRef("c", 3, 1)]
    carried = after_prune(PRIMARY, ("a",), REPLICA, listed, resume=True)
    assert [(s.name, s.index) for s in carried.primary.snapshots] == [("b", 0), ("c", 1)]
    assert carried.primary.values == PRIMARY.values
    assert carried.replica == replace(
        REPLICA, snapshots=tuple(listed), resume_token=None, resume_to_guid=None,
        modified_since_last_snapshot=False,
    )  # fmt: skip
    assert carried.resume is True
