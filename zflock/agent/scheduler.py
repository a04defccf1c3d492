"""The replication scheduler: keeps each continuous policy's replicas fresh (issue 11).

It runs in every agent and acts for the volumes whose primary is here.
Every decision (when a link runs, which due links start, the backoff after
a failure, what a policy change or a move does to the links) is a pure
function of `zflock/replication/schedule.py`; this loop only reads the
policies, starts runs as jobs and waits. Each run is one cycle of the
replication service (snapshot, send what the replica lacks, prune) under
the volume's lock, recorded as a `replicate` job, so `zflock status` shows
it and a SIGTERM lets it finish or cancels it like any other job.

The links are reloaded from the volumes' properties (docs/design.md:
the truth is in ZFS) when the agent starts, after an operation that may
change them (`set_policy`, a move, a promotion: `reloading` wraps them),
after any failed run, and every `RESCAN` seconds whatever happens (a move
settled by recovery in the background, a property set by hand). The periodic
rescan reads in the background, so the runs due meanwhile start on time; one
asked for is read before any run starts. A volume
that stops being primary here leaves the schedule; one that becomes
primary here joins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zflock.agent.jobs import Job, Jobs
from zflock.agent.locks import VolumeBusy, VolumeLocks
from zflock.agent.scheduled_run import RunLink
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig
from zflock.cluster.ownership import (
    ROLE_PRIMARY,
    ZFLOCK_PROPERTIES,
    NotManaged,
    ownership_from_properties,
)
from zflock.events import NO_OBSERVER, Observer, ScheduleLate
from zflock.move.marker import PROP_MOVE
from zflock.replication.policy import (
    POLICY_PROPERTIES,
    DamagedPolicy,
    ReplicationPolicy,
    policy_from_properties,
)
from zflock.replication.schedule import (
    LatenessLog,
    Link,
    LinkKey,
    after_run,
    deferred,
    next_wakeup,
    pick,
    reconcile,
    started,
)
from zflock.rpc import messages as m
from zflock.rpc.schedule_messages import LastResult, ScheduleInfo, ScheduleList
from zflock.zfs import Dataset

log = logging.getLogger("zflock.agent.scheduler")

# Seconds between two full reloads of the policies when nothing asked for one.
RESCAN = 30.0
# Seconds a run waits when its volume is locked by another operation (a move,
# a manual `zflock replicate`): not a failure, so no backoff.
BUSY_RETRY = 5.0

# How long a move waits for a scheduled run of its volume to end before it goes
# ahead anyway (and is refused as busy, as behind any other operation).
PAUSE_WAIT = 60.0


@dataclass
class LastRun:
    """How the last run of a link ended, for `status` (wall-clock times)."""

    job: str
    result: LastResult
    finished: float
    bytes: int = 0
    kind: str | None = None


# What a rescan reads of each copy: its ownership, its policy and a move's marker.
SCHEDULE_PROPERTIES = (*ZFLOCK_PROPERTIES, *POLICY_PROPERTIES, PROP_MOVE)


def scheduled_policies(root: str, listed: Sequence[Dataset]) -> dict[str, ReplicationPolicy]:
    """The continuous policy of each copy under `root` that this node schedules.

    A copy is scheduled here when it is a zflock primary, not held by a move, with
    a readable policy that has an interval. A damaged policy schedules nothing
    (`ls` shows it damaged); anything not ours is skipped.
    """
    policies = {}
    for ds in listed:
        if ds.type != "filesystem" or ds.name.rpartition("/")[0] != root:
            continue
        try:
            ownership = ownership_from_properties(ds.properties)
        except NotManaged:
            continue
        if ownership.role != ROLE_PRIMARY or ds.properties.get(PROP_MOVE):
            continue  # not ours to send, or a move holds it
        try:
            policy = policy_from_properties(ds.properties)
        except DamagedPolicy as exc:
            log.warning("unreadable policy: %s", exc, extra={"volume": ownership.volume})
            continue
        if policy is not None and policy.every is not None:
            policies[ownership.volume] = policy
    return policies


class Scheduler:
    def __init__(
        self,
        config: AgentConfig,
        volumes: Volumes,
        locks: VolumeLocks,
        jobs: Jobs,
        run_link: RunLink,
        observer: Observer = NO_OBSERVER,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.volumes = volumes
        self.locks = locks
        self.jobs = jobs
        self.run_link = run_link
        self.observer = observer
        self.clock = clock
        self.rng = rng or random.Random()
        self.limit = max(1, config.replication.max_streams)
        self.links: dict[LinkKey, Link] = {}
        self.last: dict[LinkKey, LastRun] = {}
        self.running: dict[LinkKey, Job] = {}
        self._paused: dict[str, int] = {}  # volume -> operations waiting for it
        self.lateness = LatenessLog()  # of every run started, for `schedules`
        self.runs_failed = 0
        self._wake = asyncio.Event()
        self._reload = True
        self._next_rescan = 0.0
        self._listing: asyncio.Task[list[Dataset] | None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        """Start nothing more; runs already going are jobs, which the agent's shutdown bounds."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)
        self._task = None
        await self._drop_listing()

    def poke(self) -> None:
        """Reload the policies soon (something may have changed them)."""
        self._reload = True
        self._wake.set()

    def reloading(
        self, op: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        """`op`, followed by a reload however it ends (for set_policy, move, promote...)."""

        async def wrapped(args: Any, call: Any) -> Any:
            try:
                return await op(args, call)
            finally:
                self.poke()

        return wrapped

    def pausing(
        self, op: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        """`op` on a volume (a move) runs without queueing behind its own schedule:
        no new run of the volume starts, one going on may end (PAUSE_WAIT at most)."""

        async def wrapped(args: Any, call: Any) -> Any:
            volume = str(getattr(args, "name", ""))
            self._paused[volume] = self._paused.get(volume, 0) + 1
            try:
                tasks = [
                    job.task
                    for (v, _), job in self.running.items()
                    if v == volume and job.task is not None
                ]
                if tasks:
                    await asyncio.wait(tasks, timeout=PAUSE_WAIT)
                return await op(args, call)
            finally:
                self._paused[volume] -= 1
                if not self._paused[volume]:
                    del self._paused[volume]
                self.poke()

        return wrapped

    # -- the loop -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # a bug must not end continuous replication for good
                log.exception("scheduler step failed; retrying in %g s", BUSY_RETRY)
                self._reload = True
                await asyncio.sleep(BUSY_RETRY)

    async def _step(self) -> None:
        """Decide, start what is due, and wait until there is something to decide."""
        self._wake.clear()  # before deciding: a run ending from here on wakes the wait
        now = self.clock()
        if self._reload:
            # Something may have changed the policies (a move, a failed run): read
            # them before starting anything, so no run starts from a stale link,
            # nor from a listing begun before the change.
            self._reload = False
            await self._drop_listing()
            await self._rescan(wait=True)
            now = self.clock()
        elif now >= self._next_rescan and self._listing is None:
            await self._rescan(wait=False)  # nothing known changed: read meanwhile
        if self._listing is not None and self._listing.done():
            await self._rescan(wait=True)  # the listing is in: take it
            now = self.clock()
        for key in pick(self._candidates(), now, self.limit):
            await self._start(key, now)
        wakeup = next_wakeup(self._candidates())  # a paused volume wakes no one
        delay = self._next_rescan - now
        if wakeup is not None and wakeup > now:
            delay = min(delay, wakeup - now)
        # A link already due but not started waits for room: a run ending (or a
        # pause lifted, or a listing done) sets _wake; polling would be a hot loop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.05))

    def _candidates(self) -> list[Link]:
        """The links the loop may start, with the running ones (they count in the limits)."""
        return [
            link for link in self.links.values()
            if link.running or link.volume not in self._paused
        ]  # fmt: skip

    async def _rescan(self, *, wait: bool) -> None:
        """Read the policies (one listing of the copies) and reconcile the links.

        `wait`: take the listing now (one already under way, or a new one). Else
        start it in the background and go on: the periodic rescan, when nothing
        asked for it, must not hold up the runs due meanwhile (on zfs-fuse a
        listing of a few hundred copies takes a good part of a second on a busy
        node, and every run due then started that much late)."""
        if self._listing is None:
            self._next_rescan = self.clock() + RESCAN
            self._listing = asyncio.get_running_loop().create_task(self._list())
            self._listing.add_done_callback(lambda _: self._wake.set())
        if not wait:
            return
        listing, self._listing = self._listing, None
        listed = await listing
        if listed is not None:
            self._load(listed)

    async def _drop_listing(self) -> None:
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.cancel()  # its `zfs get` is killed and reaped (zfs.runner)
            # Waited for without awaiting it: `await listing` would raise its
            # CancelledError here, and suppressing that would also swallow a
            # cancellation of this task itself (stop() then waited its 5 s out).
            await asyncio.wait([listing])

    async def _list(self) -> list[Dataset] | None:
        try:
            # The copies only, not their snapshots (depth 1): a rescan every RESCAN
            # seconds must not cost more as each copy's history grows.
            return await self.volumes.zfs.list_datasets(
                self.config.pool_root, SCHEDULE_PROPERTIES, recursive=True, depth=1
            )
        except Exception as exc:  # ZFS busy or slow: keep the links, try at the next rescan
            log.warning("cannot read the replication policies: %s", exc)
            return None

    def _load(self, listed: Sequence[Dataset]) -> None:
        root = self.config.pool_root
        policies = scheduled_policies(root, listed)
        now = self.clock()
        links: dict[LinkKey, Link] = {}
        current = tuple(self.links.values())
        for volume in sorted({*policies, *(v for v, _ in self.links)}):
            for link in reconcile(volume, current, policies.get(volume), now, self.rng):
                old = self.links.get(link.key)
                # A run going on keeps its link marked running until it ends.
                links[link.key] = started(link) if old is not None and old.running else link
        for key in self.links.keys() - links.keys():
            log.info("no longer replicating to %s", key[1], extra={"volume": key[0]})
            self.last.pop(key, None)
        for key in links.keys() - self.links.keys():
            log.info("replicating to %s every %gs", key[1], links[key].every,
                     extra={"volume": key[0]})  # fmt: skip
        self.links = links

    async def _start(self, key: LinkKey, now: float) -> None:
        volume, target = key
        link = self.links[key]
        try:
            # Never waits: an operation holding the volume (a move, a manual sync)
            # goes first and this run comes back after BUSY_RETRY.
            await self.locks.acquire(volume, f"scheduled replication to {target}", wait=False)
        except VolumeBusy:
            self.links[key] = deferred(link, now, min(BUSY_RETRY, link.every))
            return
        late = max(0.0, now - link.next_run)
        self.lateness.add(late)
        self.observer.emit(ScheduleLate(late))
        self.links[key] = started(link)
        job = Job(kind="replicate", volume=volume, node=self.config.node, target=target)
        job.step = "scheduled"

        async def body(job: Job) -> m.ReplicationReport:
            try:
                return await self.run_link(job, volume, target)
            finally:
                self.locks.release(volume)

        self.jobs.start(job, body)
        self.running[key] = job
        assert job.task is not None
        job.task.add_done_callback(lambda _: self._finished(key, job, now))

    def _finished(self, key: LinkKey, job: Job, started_at: float) -> None:
        if self.running.get(key) is job:
            del self.running[key]
        link = self.links.get(key)
        error = None if job.state == "done" else (job.error or "failed")
        if error is not None:
            self.runs_failed += 1
        if link is None or not link.running:
            return  # dropped from the schedule while it ran: its result changes nothing
        self.links[key] = after_run(link, started_at, self.clock(), error, self.rng)
        report = job.result if isinstance(job.result, m.ReplicationReport) else None
        self.last[key] = LastRun(
            job=job.id,
            result="ok" if error is None else "failed",
            finished=time.time(),
            bytes=report.bytes if report else 0,
            kind=report.steps[0].kind if report and report.steps else None,
        )
        if error is not None:
            log.warning("scheduled replication to %s failed: %s", key[1], error,
                        extra={"volume": key[0], "job": job.id})  # fmt: skip
            self._reload = True  # it may have failed because the copy was moved
        self._wake.set()

    # -- status ---------------------------------------------------------------------

    async def schedules(self, args: m.Empty, call: object) -> ScheduleList:
        now, wall = self.clock(), time.time()

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall + (t - now), 3)

        links = []
        for key, link in sorted(self.links.items()):
            last = self.last.get(key)
            links.append(
                ScheduleInfo(
                    volume=link.volume, node=self.config.node, target=link.target,
                    every=link.every, next_run=None if link.running else at(link.next_run),
                    running=link.running, failures=link.failures,
                    last_result=last.result if last else "never", last_error=link.last_error,
                    last_success=at(link.last_success), last_job=last.job if last else None,
                    last_bytes=last.bytes if last else 0, last_kind=last.kind if last else None,
                )
            )  # fmt: skip
        return ScheduleList(
            node=self.config.node,
            links=links,
            max_streams=self.limit,
            lateness=list(self.lateness.values),
            runs_started=self.lateness.count,
            runs_failed=self.runs_failed,
        )
