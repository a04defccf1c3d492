"""Execute replication: plan, clean up, stream each step, verify, re-plan when told.

The decisions are the planner's (plan.py, pure); this module only carries
them out through the two endpoints and reports progress. It never decides
on its own to destroy or roll back anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from zflock.errors import ZflockError
from zflock.replication.endpoint import (
    Cleanup,
    Receiver,
    ReceiveResult,
    ReplicaModified,
    Sender,
    SourceIdentity,
    StepHeader,
)
from zflock.replication.history import after_plain_steps
from zflock.replication.model import Plan, PlanOptions, ReplicaInfo, Source
from zflock.replication.plan import plan_replication

log = logging.getLogger("zflock.replication")

# A plan that says "re-plan after" (a resume, an aborted partial receive, an
# adoption) converges in two or three rounds, one more after a receive refused
# as "modified"; more means something keeps changing.
MAX_ROUNDS = 5


@dataclass
class StepProgress:
    """Reported to whoever started the job while a step streams."""

    step: str
    bytes: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.bytes / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class StepOutcome:
    header: StepHeader
    result: ReceiveResult
    seconds: float


@dataclass
class Outcome:
    steps: list[StepOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    up_to_date: bool = False
    newest: ReceiveResult | None = None
    # The destination as this call left it, where its last plan tells it exactly
    # (history.after_plain_steps); None: ask the destination.
    replica: ReplicaInfo | None = None

    @property
    def bytes(self) -> int:
        return sum(s.result.bytes for s in self.steps)


ProgressFn = Callable[[StepProgress], None]


class VerifyFailed(ZflockError):
    pass


async def _counted(
    chunks: AsyncIterator[bytes], progress: StepProgress, report: ProgressFn
) -> AsyncIterator[bytes]:
    last = 0.0
    async for chunk in chunks:
        progress.bytes += len(chunk)
        now = time.monotonic()
        if now - last >= 0.2:  # enough for a live display, cheap for a fast stream
            report(progress)
            last = now
        yield chunk
    report(progress)


async def replicate(
    sender: Sender,
    receiver: Receiver,
    identity: SourceIdentity,
    options: PlanOptions,
    report: ProgressFn = lambda _: None,
    *,
    source: Source | None = None,
    destination: ReplicaInfo | None = None,
) -> Outcome:
    """Bring the receiver up to date with the sender's newest snapshot.

    `source` and `destination`, when given, are the two sides as the caller has just
    read them (a replication cycle, agent/link.py): the first round plans from them
    instead of reading them again. Every later round reads both. A stale
    `destination` costs at most a refused step: the receiver checks each step
    against its own state (zfs_endpoint.py)."""
    outcome = Outcome()
    # Set when a receive was refused because the replica was written to after its
    # newest snapshot: the next plan knows it (rule 12) and rolls it back. Once per
    # call: a replica that is written to again at once is left to the operator.
    modified, retried = False, False
    for _ in range(MAX_ROUNDS):
        if source is None:
            source = await sender.source()
        if destination is None:
            destination = await receiver.state()
        if modified:
            destination = replace(destination, modified_since_last_snapshot=True)
            modified = False
        plan = plan_replication(source, destination, options)  # a conflict raises
        for warning in plan.warnings:
            log.warning("%s: %s", identity.volume, warning)
            outcome.warnings.append(warning)
        if plan.up_to_date:
            outcome.up_to_date = not outcome.steps
            outcome.replica = destination
            break
        log.info("%s: %s", identity.volume, plan.reason)
        cleanup = Cleanup.from_plan(plan, source, options)
        if cleanup.needed:
            await receiver.prepare(identity, cleanup)
        try:
            await _run_steps(sender, receiver, identity, options, plan, outcome, report)
        except ReplicaModified as exc:
            if retried:
                raise
            log.warning("%s: %s; planning again", identity.volume, exc)
            modified = retried = True
            source, destination = None, None
            continue
        if not plan.replan_after:
            outcome.replica = after_plain_steps(destination, source, plan)
            break
        source, destination = None, None  # changed: read both again
    else:
        raise ZflockError(
            f"{identity.volume}: replication did not settle after {MAX_ROUNDS} rounds "
            "(is something changing the destination?)"
        )
    return outcome


async def _run_steps(
    sender: Sender,
    receiver: Receiver,
    identity: SourceIdentity,
    options: PlanOptions,
    plan: Plan,
    outcome: Outcome,
    report: ProgressFn,
) -> None:
    for i, step in enumerate(plan.steps):
        header = StepHeader.from_step(
            step, force=plan.receive_force and i == 0, resumable=options.resume_supported
        )
        progress = StepProgress(step=header.describe(), total=await sender.estimate(header))
        report(progress)
        async with sender.send(header) as chunks:
            counted = _counted(chunks, progress, report)
            result = await receiver.receive(identity, header, counted)
        if header.to is not None and result.guid != header.to.guid:
            raise VerifyFailed(
                f"{identity.volume}: the destination reports guid {result.guid} after "
                f"{header.describe()}, expected {header.to.guid}"
            )
        outcome.steps.append(StepOutcome(header, result, time.monotonic() - progress.started))
        outcome.newest = result
