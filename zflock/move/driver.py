"""The move's state machine: pre-copy rounds, cutover, promote, demote, or roll back.

Runs in the source's agent as a job. Decisions come from converge.py and
recovery.py (pure); this module only sequences them and keeps the safety
invariants of docs/design.md:

1. One writable copy: the source is fenced (`readonly=on`) before the
   destination is asked to promote, and is made writable again only when
   the destination cannot have promoted (phase `fenced`) or has said it
   never will (`resolve` answered ABORTED).
2. Until the destination holds the final snapshot, verified by GUID, any
   failure rolls the source back (writable, mounted, rollback hooks run).
3. The final snapshot is taken after the fence: every acknowledged write is in it.
5. A move cut short is finished or undone by recover() (agent start, or
   `zflock move` run again).
6. Every step taken while the source is fenced has a deadline (spec.deadlines,
   `[deadlines]` in agent.toml). A deadline missed before the promote request
   is sent rolls back like any other failure there; a missed promote deadline
   is a lost answer: the source stays fenced and the move is settled.

Downtime is measured from the start of the pre-cutover hooks (the consumer
stops) to the destination's answer to promote, which it sends after the copy
is writable, mounted, and its post-cutover hooks have run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar, cast

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from zflock.cluster.config import MoveDeadlines
from zflock.errors import ZflockError
from zflock.events import (
    NO_OBSERVER,
    CutoverStep,
    Event,
    Observer,
    PrecopyRound,
    RoundDecision,
    StreamProgressed,
    move_phase_after,
)
from zflock.move.converge import ABORT, CONTINUE, CUTOVER, Decision, Limits, Round, decide
from zflock.move.endpoint import DestinationSide, PromoteRequest, Promotion, SourceSide
from zflock.move.marker import FENCED, PROMOTING, Marker
from zflock.move.recovery import COMPLETE, ROLL_BACK, UNREACHABLE, Heard, Recovery, recover
from zflock.move.source_steps import demote_source, run_rollback_hooks
from zflock.replication.driver import Outcome

log = logging.getLogger("zflock.move")
T = TypeVar("T")

# Replicate what the source has to the destination once, without a new snapshot,
# reporting the stream's progress to the observer given.
ReplicateOnce = Callable[[Observer], Awaitable[Outcome]]


class MoveFailed(ZflockError):
    """The move did not happen; the source is the writable primary again."""


class MoveInDoubt(ZflockError):
    """The source is fenced and cannot learn whether the destination promoted."""


class StepDeadline(ZflockError):
    """A cutover step outlived its deadline (and was cancelled)."""


@dataclass(frozen=True)
class MoveSpec:
    volume: str
    volume_id: str
    source: str
    destination: str
    epoch: int  # the source's epoch now; the destination gets epoch + 1
    move_id: str
    limits: Limits = field(default_factory=Limits)
    destroy_source: bool = False
    post_hooks: list[list[str]] = field(default_factory=list)
    deadlines: MoveDeadlines = field(default_factory=MoveDeadlines)
    # The source's replication policy properties, carried by the promote (None: none sent).
    policy: dict[str, str] | None = None


@dataclass
class MoveResult:
    rounds: list[Round] = field(default_factory=list)
    final: Round | None = None
    reason: str = ""
    downtime_s: float = 0.0
    epoch: int = 0
    snapshot: str = ""
    cutover: dict[str, float] = field(default_factory=dict)  # step -> seconds
    warnings: list[str] = field(default_factory=list)
    demotion_pending: bool = False


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait until `task` has ended, without raising its error. Cancelled meanwhile, it
    cancels the task too and waits for that, then goes on being cancelled."""
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.wait([task])
        raise


def _round(number: int, outcome: Outcome, seconds: float) -> Round:
    kind = outcome.steps[0].header.kind if outcome.steps else "none"
    return Round(number=number, kind=kind, bytes=outcome.bytes, seconds=round(seconds, 3))


class Move:
    """One move, run once: `run()` pre-copies, cuts over and demotes the source.

    It reports what happens as typed events (zflock.events: PrecopyRound, CutoverStep,
    and the streams' StreamProgressed labelled with the move's phase) to `observer`.
    """

    def __init__(
        self,
        spec: MoveSpec,
        source: SourceSide,
        destination: DestinationSide,
        replicate_once: ReplicateOnce,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.spec = spec
        self.source = source
        self.destination = destination
        self.replicate_once = replicate_once
        self.observer = observer
        self.result = MoveResult()
        self.marker = Marker(FENCED, spec.move_id, spec.destination, spec.epoch + 1)
        self._stall: asyncio.Timeout | None = None  # the final delta's, while it runs
        self._marked = False  # whether a move marker was written on the source
        self.phase = "pre-copy round 1"  # what the streams now running are for

    def emit(self, event: Event) -> None:
        """The streams' progress, labelled with the phase; it also restarts the final
        delta's inactivity deadline. Every other event passes unchanged."""
        if isinstance(event, StreamProgressed):
            self.progressed()
            event = replace(event, step=f"{self.phase}: {event.step}")
        elif isinstance(event, PrecopyRound | CutoverStep):
            self.phase = move_phase_after(event)
        self.observer.emit(event)

    def progressed(self) -> None:
        """A replication reported progress: the final delta's inactivity deadline restarts.

        The final delta lasts as long as its data, so its deadline counts only time
        without progress (no byte moved, no step begun or ended).
        """
        # Not once expired: the cancellation is on its way and reschedule() would raise.
        if self._stall is not None and not self._stall.expired():
            loop = asyncio.get_running_loop()
            self._stall.reschedule(loop.time() + self.spec.deadlines.final_delta)

    # -- pre-copy -----------------------------------------------------------------------

    async def precopy(self) -> Decision:
        rounds = self.result.rounds
        while True:
            started = time.monotonic()
            await self.source.snapshot()
            outcome = await self.replicate_once(self)
            r = _round(len(rounds) + 1, outcome, time.monotonic() - started)
            rounds.append(r)
            decision = decide(rounds, self.spec.limits)
            action = cast(RoundDecision, decision.action)
            self.emit(PrecopyRound(self.spec.volume, r.number, r.kind, r.bytes, r.seconds,
                                   action, decision.reason))  # fmt: skip
            log.info("pre-copy round %d: %s %d B in %.2f s; %s", r.number, r.kind, r.bytes,
                     r.seconds, decision.reason, extra={"volume": self.spec.volume})  # fmt: skip
            if decision.action != CONTINUE:
                self.result.reason = decision.reason
                return decision

    # -- cutover ------------------------------------------------------------------------

    def _step(self, name: str, started: float) -> None:
        self.result.cutover[name] = round(time.monotonic() - started, 3)
        self.emit(CutoverStep(self.spec.volume, name, self.result.cutover[name]))

    async def _rollback(self, why: BaseException, *, fenced: bool) -> MoveFailed:
        """Undo a cutover that cannot finish: source writable and mounted, consumer restarted."""
        self.emit(CutoverStep(self.spec.volume, "rollback", 0.0))
        if fenced:
            await self.source.unfence()
        elif self._marked:
            await self.source.clear_marker("the pre-cutover hooks failed; nothing was fenced")
        what = "rolled back; the source is writable again" if fenced else "nothing was fenced"
        # The result is not returned on failure: a failed hook goes into the error itself.
        if hook_error := await run_rollback_hooks(self.source, self.spec.volume):
            what += f", but {hook_error}"
        return MoveFailed(f"move of {self.spec.volume} failed ({why}); {what}")

    @asynccontextmanager
    async def _deadline(
        self, step: str, seconds: float, *, stall: bool = False
    ) -> AsyncIterator[asyncio.Timeout]:
        """Cancel the block after `seconds` (a zfs command in it is killed) and raise
        StepDeadline naming the step; other errors pass through unchanged."""
        timeout = asyncio.timeout(seconds)
        try:
            async with timeout:
                yield timeout
        except TimeoutError:
            if not timeout.expired():
                raise  # someone else's TimeoutError
            what = "made no progress for" if stall else "did not finish within"
            raise StepDeadline(f"{step} {what} {seconds:g} s (its deadline)") from None

    async def _final_delta(self) -> Outcome:
        seconds = self.spec.deadlines.final_delta
        async with self._deadline("the final delta", seconds, stall=True) as stall:
            self._stall = stall
            try:
                return await self.replicate_once(self)
            finally:
                self._stall = None

    async def _write_marker(self, marker: Marker, step: str) -> None:
        self._marked = True  # from the first try on: a write cut short may have landed
        async with self._deadline(step, self.spec.deadlines.fence):
            await self.source.set_marker(marker)

    async def _beside(self, work: Awaitable[T], marker: Marker, step: str) -> T:
        """Run `work` while `marker` is written, and end only when both have.

        The marker write is off the downtime's path this way (docs/move.md says what
        each phase then means to recovery). On any failure the write is waited for
        (cancelled, if this is being cancelled) before the failure goes on: a rollback
        or a recovery must never be overtaken by a marker write landing after it. The
        work's error wins over the write's; the write's error alone is raised too."""
        marking = asyncio.create_task(self._write_marker(marker, step))
        try:
            done = await work
        except BaseException:
            await _ended(marking)
            if not marking.cancelled():
                marking.exception()  # retrieved: the work's failure is the one reported
            raise
        await marking
        return done

    async def cutover(self) -> Promotion:
        spec = self.spec
        deadlines = spec.deadlines
        down = time.monotonic()
        t = down
        try:
            # The `fenced` marker goes on while the hooks stop the consumer: from then
            # on a crash is recovered as a rollback, rollback hooks and all.
            await self._beside(self.source.run_hooks("pre_cutover"), self.marker,
                               "writing the move marker")  # fmt: skip
        except ZflockError as exc:
            raise await self._rollback(exc, fenced=False) from exc
        self._step("pre-cutover hooks", t)
        try:
            t = time.monotonic()
            async with self._deadline("the fence", deadlines.fence):
                await self.source.fence()
            self._step("fence", t)
            t = time.monotonic()
            async with self._deadline("the final snapshot", deadlines.final_snapshot):
                final_snap = await self.source.snapshot()
            # `promoting` goes on while the final delta streams: the promote request
            # still goes out only once it is written (below), so a crash before then is
            # settled by asking the destination, which answers "aborted".
            promoting = self.marker.at(PROMOTING)
            outcome = await self._beside(self._final_delta(), promoting,
                                         "marking the move promoting")  # fmt: skip
            self.marker = promoting
            self.result.final = _round(0, outcome, time.monotonic() - t)
            self._step("final delta", t)
            t = time.monotonic()
            received = outcome.newest
            # The receiver checked its newest snapshot right after the receive and
            # reported its guid: asking again would only add a round trip to the
            # downtime. Without that report (nothing was sent), ask.
            if received is None or received.guid != final_snap.guid:
                async with self._deadline("verifying the final snapshot", deadlines.verify):
                    state = await self.destination.state()
                newest = state.snapshots[-1] if state.snapshots else None
                if newest is None or newest.guid != final_snap.guid:
                    raise ZflockError(
                        f"{spec.destination}'s newest snapshot is "
                        f"{newest.describe() if newest else 'none'}, not @{final_snap.name}"
                    )
            self._step("verify", t)
        except BaseException as exc:
            # Nothing was asked of the destination: it cannot have promoted.
            raise await self._rollback(exc, fenced=True) from exc
        request = PromoteRequest(
            name=spec.volume, volume_id=spec.volume_id, move_id=spec.move_id,
            epoch=self.marker.new_epoch, guid=final_snap.guid, source=spec.source,
            post_hooks=spec.post_hooks, policy=spec.policy,
        )  # fmt: skip
        t = time.monotonic()
        try:
            # From here on the destination may promote: a missed deadline is a lost
            # answer, settled below, never a reason to unfence.
            async with self._deadline(f"the promote call to {spec.destination}", deadlines.promote):
                promotion = await self.destination.promote(request)
        except Exception as exc:
            # Did it promote before the answer was lost? Only the destination knows.
            outcome_of_promote = await self._settle()
            if outcome_of_promote.action == ROLL_BACK:
                raise await self._rollback(exc, fenced=True) from exc
            if outcome_of_promote.action != COMPLETE:
                raise MoveInDoubt(
                    f"move of {spec.volume}: {exc}; {outcome_of_promote.reason}; the source "
                    "stays fenced, and its agent keeps settling the move in the background "
                    "(or run the same `zflock move` again once it is reachable)"
                ) from exc
            promotion = Promotion(
                node=spec.destination, epoch=self.marker.new_epoch, snapshot=final_snap.name,
                mountpoint="", seconds=0.0,
                hook_errors=["post-cutover hooks' outcome unknown (promote answer lost)"],
            )  # fmt: skip
        self._step("promote", t)
        self.result.downtime_s = round(time.monotonic() - down, 3)
        self.result.epoch = promotion.epoch
        self.result.snapshot = promotion.snapshot
        for error in promotion.hook_errors:
            self.result.warnings.append(f"on {spec.destination}: {error}")
        return promotion

    async def _settle(self) -> Recovery:
        """Ask the destination (retrying while unreachable) to settle this move."""
        answer: Heard = UNREACHABLE
        seen = 0
        try:
            # Any failure is retried: a destination agent that just restarted, or a
            # ZFS command that was busy for a moment, answers on a later try.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(ZflockError),
                wait=wait_exponential(multiplier=0.5, max=5),
                stop=stop_after_delay(self.spec.deadlines.settle),
                reraise=True,
            ):
                with attempt:
                    resolution = await self.destination.resolve(self.spec.move_id)
                    answer, seen = resolution.answer, resolution.epoch
        except ZflockError as exc:
            # Not knowing is never a reason to unfence: the source stays read-only.
            log.error("cannot settle move %s with %s: %s", self.spec.move_id,
                      self.spec.destination, exc, extra={"volume": self.spec.volume})  # fmt: skip
            answer = UNREACHABLE
        # A STALE outcome is left to the background recovery (the marker stays): the
        # caller reports the move in doubt and never unfences.
        return recover(self.marker, "primary", self.spec.epoch, answer, seen)

    async def demote(self) -> None:
        t = time.monotonic()
        try:
            await demote_source(self.source, destroy=self.spec.destroy_source)
        except ZflockError as exc:
            self.result.demotion_pending = True
            self.result.warnings.append(
                f"the source copy could not be demoted yet ({exc}); it is read-only, and the "
                "agent keeps retrying"
            )
        self._step("demote source", t)

    async def run(self) -> MoveResult:
        # What the fence can do ahead (zfs_source.prepare_fence) runs beside the rounds:
        # neither in the downtime nor between the last round and the cutover, where
        # the consumer's writes would add to the final delta. "prepare fence" is how
        # long the cutover still waited for it.
        preparing = asyncio.create_task(self.source.prepare_fence())
        try:
            decision = await self.precopy()
            if decision.action == ABORT:
                raise MoveFailed(
                    f"move of {self.spec.volume} abandoned before cutover: {decision.reason} "
                    "(--strict); nothing was fenced"
                )
            assert decision.action == CUTOVER
            t = time.monotonic()
            await preparing
            self._step("prepare fence", t)
        finally:
            if not preparing.done():
                preparing.cancel()
                await _ended(preparing)
        await self.cutover()
        await self.demote()
        return self.result
