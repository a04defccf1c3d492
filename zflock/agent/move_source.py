"""The source's part in a move: check it, then run it as a job on one replication link.

The state machine is zflock.move.driver.Move; this module wires it to this node's
copy (move_site.py), to the destination over the move's link (pre-copy rounds, the
final delta and the promote call share its one connection), and to the job, which
observes the driver's typed events.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from zflock.agent.hooks import validate_hook
from zflock.agent.jobs import Job, Jobs
from zflock.agent.link import ReplicationLink
from zflock.agent.move_preflight import preflight
from zflock.agent.move_recovery import MoveRecovery
from zflock.agent.move_site import CliHooks, MoveSite
from zflock.agent.observing import move_outcome
from zflock.agent.policies import policy_to_carry
from zflock.cluster.config import load_inventory, validate_node_name
from zflock.errors import UsageError, ZflockError
from zflock.events import FanOut, MoveFinished
from zflock.move.converge import Limits
from zflock.move.driver import Move, MoveInDoubt, MoveSpec
from zflock.move.marker import new_move_id
from zflock.move.recovery import COMPLETE, WAIT
from zflock.rpc import messages as m
from zflock.rpc.move_peer import RemoteDestination
from zflock.zfs import validate_component

SendEvent = Callable[[dict[str, Any]], Awaitable[None]]


def check_limits(args: m.Move) -> None:
    """The request's limits, as the agent accepts them (the CLI checks the same)."""
    if not 0 < args.max_downtime <= 3600:
        raise UsageError(f"--max-downtime must be in (0, 3600] seconds, got {args.max_downtime}")
    if not 1 <= args.max_rounds <= 100:
        raise UsageError(f"--max-rounds must be 1-100, got {args.max_rounds}")


class MoveSource:
    def __init__(self, site: MoveSite, jobs: Jobs, recovery: MoveRecovery) -> None:
        self.site = site
        self.jobs = jobs
        self.recovery = recovery

    async def move(self, args: m.Move, send_event: SendEvent) -> m.MoveReport:
        """The `move` operation: refuse, plan (--dry-run), or start the move as a job and
        follow it. An interrupted move of the volume is settled first."""
        site = self.site
        node = site.config.node
        name = validate_component(args.name, "volume name")
        target = validate_node_name(args.to)
        check_limits(args)
        cli_hooks: CliHooks = {
            "pre_cutover": site.hooks_arg(args.pre_hooks, "--pre-hook"),
            "rollback": site.hooks_arg(args.rollback_hooks, "--rollback-hook"),
        }
        post_hooks = [validate_hook(h, "--post-hook") for h in args.post_hooks]
        peer = load_inventory(site.config.cluster).node(target)
        if target == node:
            raise ZflockError(f"{name} is already on {target}; nothing to move")
        await site.locks.acquire(name, f"move to {target}", wait=args.wait)
        link: ReplicationLink | None = None
        handed_over = False
        try:
            ownership = await site.volumes.ownership(name)
            marker = await site.marker(name)
            if marker is not None:
                done = await self.recovery.recover(name, ownership, marker)
                if done.action == WAIT:
                    raise MoveInDoubt(f"an interrupted move of {name}: {done.reason}")
                if done.action == COMPLETE:
                    if marker.destination != target:
                        raise ZflockError(
                            f"an interrupted move of {name} to {marker.destination} was "
                            f"completed; {name} is now on {marker.destination}"
                        )
                    return m.MoveReport(
                        volume=name, source=node, destination=target,
                        epoch=marker.new_epoch, result="completed", reason=done.reason,
                        move_id=marker.move_id,
                    )  # fmt: skip
                ownership = await site.volumes.ownership(name)  # rolled back: move again
            if not ownership.is_primary:
                raise ZflockError(
                    f"node {node} holds a {ownership.role} of {name}; a move starts on its primary"
                )
            link = ReplicationLink(name, peer, site.links, ownership=ownership)
            await link.connect()  # the move's one connection, kept until it ends
            plan = await preflight(site, link, post_hooks, args)
            if args.dry_run:
                return m.MoveReport(
                    volume=name, source=node, destination=target, epoch=ownership.epoch,
                    result="planned", reason="--dry-run: nothing changed", move_id="",
                    plan=plan.lines(),
                )  # fmt: skip
            spec = MoveSpec(
                volume=name, volume_id=ownership.id, source=node, destination=target,
                epoch=ownership.epoch, move_id=new_move_id(),
                limits=Limits(max_downtime=args.max_downtime, max_rounds=args.max_rounds,
                              strict=args.strict),
                destroy_source=args.destroy_source, post_hooks=post_hooks,
                deadlines=site.config.deadlines,
                policy=await policy_to_carry(site.zfs, site.config.dataset(name)),
            )  # fmt: skip
            job = Job(kind="move", volume=name, node=node, target=target)
            self.jobs.start(job, self._job(spec, link, cli_hooks))
            handed_over = True
        finally:
            if not handed_over:
                if link is not None:
                    await link.close()
                site.locks.release(name)
        report: m.MoveReport = await self.jobs.follow(job, send_event)
        return report

    def _job(
        self, spec: MoveSpec, link: ReplicationLink, cli_hooks: CliHooks
    ) -> Callable[[Job], Awaitable[m.MoveReport]]:
        """The job's body: run the move, then close its link and release the volume."""
        observer = self.site.links.observer

        async def run(job: Job) -> m.MoveReport:
            try:
                report = await self._run(job, spec, link, cli_hooks)
            except BaseException as exc:
                elapsed = time.time() - job.started
                outcome = move_outcome(exc)
                observer.emit(MoveFinished(spec.volume, spec.destination, outcome, None, elapsed))
                raise
            finally:
                await link.close()
                self.site.locks.release(spec.volume)
            observer.emit(
                MoveFinished(spec.volume, spec.destination, "moved", report.downtime_s,
                             report.total_s)
            )  # fmt: skip
            return report

        return run

    async def _run(
        self, job: Job, spec: MoveSpec, link: ReplicationLink, cli_hooks: CliHooks
    ) -> m.MoveReport:
        started = time.monotonic()
        site = self.site
        name = spec.volume
        context = site.context(name, spec.source, spec.destination, spec.epoch + 1)
        source = site.source(name, context, cli_hooks, take=link.snapshot)
        destination = RemoteDestination(
            link.client, link.receiver, link.peer, site.links.key(), name, spec.volume_id,
            spec.epoch + 1, resolve_timeout=spec.deadlines.resolve,
        )  # fmt: skip
        # The job shows the driver's events; the agent's observer (metrics) sees them too.
        move = Move(spec, source, destination, link.replicate, FanOut([job, site.links.observer]))
        try:
            result = await move.run()
        except Exception:
            # Whatever failed, a marker left on the source means a cutover that
            # is not settled: keep at it in the background (docs/move.md).
            if await site.marker(name) is not None:
                self.recovery.spawn(name)
            raise
        if result.demotion_pending:
            self.recovery.spawn(name)
        rounds = [m.RoundReport(r.number, r.kind, r.bytes, r.seconds) for r in result.rounds]
        final = result.final
        return m.MoveReport(
            volume=name, source=spec.source, destination=spec.destination, epoch=result.epoch,
            result="moved", reason=result.reason, move_id=spec.move_id, rounds=rounds,
            final=m.RoundReport(0, final.kind, final.bytes, final.seconds) if final else None,
            downtime_s=result.downtime_s, total_s=round(time.monotonic() - started, 3),
            bytes=sum(r.bytes for r in result.rounds) + (final.bytes if final else 0),
            cutover=result.cutover, warnings=result.warnings,
        )  # fmt: skip
