"""The scheduler's periodic rescan does not hold up the runs due while it reads
(agent/scheduler.py, `_rescan`), and a rescan something asked for does.

Real ZFS, one node, no agents: the scheduler over the node's pool, its listing of
the copies made slow (a `sh` in front of `zfs` that sleeps before the rescan's
`zfs get -d 1`), and a run that only notes whether a listing was under way when
it started. What runs is the scheduler's own seam (`run_link`), not a fake ZFS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ZfsNode
from zflock.agent import scheduler as scheduler_module
from zflock.agent.jobs import Job, Jobs
from zflock.agent.locks import VolumeLocks
from zflock.agent.names import Names
from zflock.agent.scheduler import Scheduler
from zflock.agent.volumes import Volumes
from zflock.rpc import messages as m
from zflock.zfs import Runner, Zfs

# Before the rescan's listing (the only `zfs get` with `-d` here): a second's sleep.
SLOW_LISTING = 'case " $* " in *" -d "*) sleep 1;; esac; exec "$@"'


async def poll(check: Callable[[], bool], *, seconds: float) -> None:
    """Until `check` holds, for at most `seconds` (the test's assertions judge after)."""
    for _ in range(round(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


async def scheduler_over_slow_listing(
    zfs_node: ZfsNode, root: str, tmp_path: Path, during: list[bool]
) -> Scheduler:
    config = zfs_node.solo_config(root, tmp_path)
    zfs = zfs_node.zfs
    locks = VolumeLocks()
    await Names(config, zfs, Volumes(config, zfs), locks, lambda: None).create(
        "vol", None, wait=True
    )
    rules = "1x1h(keep=all) | 24x1h | 14x1d"
    policy = {"zflock:replicate-to": "node2", "zflock:every": "1s", "zflock:keep": rules}
    await zfs.set(f"{root}/vol", {**policy, "zflock:keep-replica": rules})
    slow = Zfs(
        Runner(prefix=(*zfs_node.prefix, "sh", "-c", SLOW_LISTING, "sh")),
        capabilities=await zfs.capabilities(),
    )

    async def run_link(job: Job, volume: str, target: str) -> m.ReplicationReport:
        listing = scheduler._listing
        during.append(listing is not None and not listing.done())
        return m.ReplicationReport(volume, "solo", target, "s", 1, True, [], 0, 0.0, [])

    scheduler = Scheduler(config, Volumes(config, slow), locks, Jobs(), run_link)
    return scheduler


async def test_runs_start_while_a_periodic_rescan_reads(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "RESCAN", 1.5)
    during: list[bool] = []
    scheduler = await scheduler_over_slow_listing(zfs_node, src_root, tmp_path, during)
    scheduler.start()
    try:
        # Bounded: about 6 runs and 3 rescans, each rescan reading for a second.
        await poll(lambda: sum(during) >= 2, seconds=10)
    finally:
        await scheduler.stop()
    assert scheduler._listing is None  # stopped: no listing left running
    # Before the change every run waited for the listing: none started during one.
    assert sum(during) >= 2, during
    assert scheduler.runs_failed == 0


async def test_a_rescan_asked_for_is_read_before_any_run_starts(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `poke` (a move, a policy change) no run starts from the links as they
    were, nor from a listing begun before the change."""
    monkeypatch.setattr(scheduler_module, "RESCAN", 3600.0)  # only asked-for rescans
    during: list[bool] = []
    scheduler = await scheduler_over_slow_listing(zfs_node, src_root, tmp_path, during)
    scheduler.start()
    try:
        # The first (blocking) load, then runs every second.
        await poll(lambda: len(during) >= 2, seconds=10)
        for _ in range(3):
            scheduler.poke()
            await asyncio.sleep(0.5)
        await poll(lambda: len(during) >= 5, seconds=5)
    finally:
        await scheduler.stop()
    assert len(during) >= 5, during
    assert not any(during), during


async def test_stopping_while_a_listing_is_dropped_stops(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    """A cancellation of the scheduler that arrives while it waits for a dropped
    listing to end (its `zfs get` being killed and reaped) is not swallowed: CI caught
    stop() waiting its 5 s out there once."""
    during: list[bool] = []
    scheduler = await scheduler_over_slow_listing(zfs_node, src_root, tmp_path, during)
    cleaning = asyncio.Event()

    async def listing_that_cleans_up_slowly() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.shield(asyncio.sleep(0.5))  # as kill_and_reap's shielded wait
            raise

    listing = asyncio.create_task(listing_that_cleans_up_slowly())
    await asyncio.sleep(0)
    scheduler._listing = listing  # type: ignore[assignment]
    dropping = asyncio.create_task(scheduler._drop_listing())
    await asyncio.wait_for(cleaning.wait(), timeout=5)
    dropping.cancel()
    await asyncio.wait([dropping], timeout=5)
    assert dropping.done() and dropping.cancelled()  # before the listing's cleanup ended
    assert not listing.done()
    await asyncio.wait([listing], timeout=5)
