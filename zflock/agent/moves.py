"""The agent's part in moves: run a move as a job (source), promote or settle (destination),
and finish interrupted moves when the agent starts.

The state machine itself is zflock.move.driver; this module wires it to this
node's ZFS, hooks, locks and jobs, and to the destination over RPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncssh

from zflock.agent.hooks import HookFailed, run_hooks, validate_hook
from zflock.agent.jobs import Job, Jobs
from zflock.agent.locks import VolumeLocks
from zflock.agent.observing import copies_listed, move_outcome
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig, NodeEntry, load_inventory, validate_node_name
from zflock.cluster.ownership import Ownership
from zflock.errors import UsageError, ZflockError
from zflock.events import NO_OBSERVER, MoveFinished, Observer
from zflock.move.converge import Limits
from zflock.move.driver import Move, MoveInDoubt, MoveSpec, recover_move
from zflock.move.endpoint import PromoteRequest, Promotion, SnapTaken
from zflock.move.marker import PROP_MOVE, BadMarker, Marker, new_move_id, parse_marker
from zflock.move.recovery import COMPLETE, WAIT, Recovery
from zflock.move.zfs_destination import ZfsDestination
from zflock.move.zfs_source import ZfsSource
from zflock.replication.driver import Outcome, StepProgress, replicate
from zflock.replication.endpoint import SourceIdentity
from zflock.replication.model import PlanOptions, ReplicaInfo
from zflock.replication.plan import plan_replication, with_pending_snapshot
from zflock.replication.zfs_endpoint import ZfsSender
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.move_peer import RemoteDestination
from zflock.rpc.replica import RemoteReceiver
from zflock.units import format_bytes
from zflock.zfs import Zfs, validate_component

log = logging.getLogger("zflock.agent.moves")
RECOVERY_RETRY_MAX = 30.0
# How long recovery waits for each other node's list of copies (their epochs).
PEER_EPOCH_SECONDS = 10.0
# Keep this share of the destination pool free after the move's data landed.
SPACE_MARGIN = 0.05


class Moves:
    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        locks: VolumeLocks,
        volumes: Volumes,
        jobs: Jobs,
        peer_key: Callable[[], asyncssh.SSHKey | None],
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self.observer = observer
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.volumes = volumes
        self.jobs = jobs
        self._peer_key = peer_key
        self.background: set[asyncio.Task[None]] = set()

    def key(self) -> asyncssh.SSHKey:
        key = self._peer_key()
        if key is None:
            raise ZflockError("agent has no key to talk to peers")
        return key

    # -- this node's side -------------------------------------------------------------

    async def marker(self, name: str) -> Marker | None:
        value = (await self.zfs.get(self.config.dataset(name), [PROP_MOVE]))[PROP_MOVE]
        try:
            return parse_marker(value)
        except BadMarker as exc:
            raise ZflockError(
                f"{self.config.dataset(name)} has a damaged zflock:move ({exc}); inspect it and "
                "clear it with `zfs inherit zflock:move` only if no move is in progress"
            ) from None

    def _context(self, name: str, source: str, destination: str, epoch: int) -> dict[str, str]:
        return {
            "volume": name,
            "mountpoint": self.config.mountpoint(name),
            "source": source,
            "destination": destination,
            "epoch": str(epoch),
        }

    def _source(
        self, name: str, context: dict[str, str], cli_hooks: dict[str, list[list[str]]]
    ) -> ZfsSource:
        async def snapshot() -> SnapTaken:
            snap = await self.volumes.snapshot(name)
            return SnapTaken(name=snap.snapshot, guid=snap.guid)

        async def hooks(kind: str) -> None:
            await self._run_hooks(name, kind, cli_hooks.get(kind, []), context)

        return ZfsSource(self.zfs, self.config.dataset(name), name, snapshot, hooks)

    async def _run_hooks(
        self, name: str, kind: str, extra: list[list[str]], context: dict[str, str]
    ) -> None:
        """This node's configured hook of `kind` for the volume, then the command line's."""
        configured = self.config.hooks_for(name)
        commands = [c for c in (getattr(configured, kind),) if c]
        await run_hooks(kind, [*commands, *extra], context, configured.timeout)

    # -- the move, on the source --------------------------------------------------------

    def _hooks_arg(self, hooks: Sequence[Sequence[str]], flag: str) -> list[list[str]]:
        checked = [validate_hook(h, flag) for h in hooks]
        if checked and not self.config.allow_client_hooks:
            raise UsageError(
                f"node {self.config.node} does not run hooks given on the command line "
                f"({flag}); set allow_client_hooks = true in its agent.toml, or configure "
                "the hooks there"
            )
        return checked

    async def move(self, args: m.Move, send_event: Callable[[dict[str, Any]], Any]) -> Any:
        name = validate_component(args.name, "volume name")
        target = validate_node_name(args.to)
        if not 0 < args.max_downtime <= 3600:
            raise UsageError(
                f"--max-downtime must be in (0, 3600] seconds, got {args.max_downtime}"
            )
        if not 1 <= args.max_rounds <= 100:
            raise UsageError(f"--max-rounds must be 1-100, got {args.max_rounds}")
        cli_hooks = {
            "pre_cutover": self._hooks_arg(args.pre_hooks, "--pre-hook"),
            "rollback": self._hooks_arg(args.rollback_hooks, "--rollback-hook"),
        }
        post_hooks = [validate_hook(h, "--post-hook") for h in args.post_hooks]
        peer = load_inventory(self.config.cluster).node(target)
        if target == self.config.node:
            raise ZflockError(f"{name} is already on {target}; nothing to move")
        await self.locks.acquire(name, f"move to {target}", wait=args.wait)
        handed_over = False
        try:
            ownership = await self.volumes.ownership(name)
            marker = await self.marker(name)
            if marker is not None:
                done = await self._recover(name, ownership, marker)
                if done.action == WAIT:
                    raise MoveInDoubt(f"an interrupted move of {name}: {done.reason}")
                if done.action == COMPLETE:
                    if marker.destination != target:
                        raise ZflockError(
                            f"an interrupted move of {name} to {marker.destination} was "
                            f"completed; {name} is now on {marker.destination}"
                        )
                    return m.MoveReport(
                        volume=name, source=self.config.node, destination=target,
                        epoch=marker.new_epoch, result="completed", reason=done.reason,
                        move_id=marker.move_id,
                    )  # fmt: skip
                ownership = await self.volumes.ownership(name)  # rolled back: move again
            if not ownership.is_primary:
                raise ZflockError(
                    f"node {self.config.node} holds a {ownership.role} of {name}; "
                    "a move starts on its primary"
                )
            plan = await self._preflight(name, ownership, peer, post_hooks, args)
            spec = MoveSpec(
                volume=name, volume_id=ownership.id, source=self.config.node,
                destination=target, epoch=ownership.epoch, move_id=new_move_id(),
                limits=Limits(max_downtime=args.max_downtime, max_rounds=args.max_rounds,
                              strict=args.strict),
                destroy_source=args.destroy_source, post_hooks=post_hooks,
                deadlines=self.config.deadlines,
            )  # fmt: skip
            if args.dry_run:
                return m.MoveReport(
                    volume=name, source=self.config.node, destination=target,
                    epoch=ownership.epoch, result="planned", reason="--dry-run: nothing changed",
                    move_id="", plan=plan,
                )  # fmt: skip
            job = Job(kind="move", volume=name, node=self.config.node, target=target)

            async def run(job: Job) -> m.MoveReport:
                try:
                    report = await self._run(job, spec, ownership, peer, cli_hooks)
                except BaseException as exc:
                    elapsed = time.time() - job.started
                    self.observer.emit(MoveFinished(name, target, move_outcome(exc), None, elapsed))
                    raise
                finally:
                    self.locks.release(name)
                self.observer.emit(
                    MoveFinished(name, target, "moved", report.downtime_s, report.total_s)
                )
                return report

            self.jobs.start(job, run)
            handed_over = True
        finally:
            if not handed_over:
                self.locks.release(name)
        return await self.jobs.follow(job, send_event)

    async def _preflight(
        self,
        name: str,
        ownership: Ownership,
        peer: NodeEntry,
        post_hooks: list[list[str]],
        args: m.Move,
    ) -> list[str]:
        """Everything that can refuse the move, checked before anything changes."""
        sender = ZfsSender(self.zfs, self.config.dataset(name), self.config.node)
        async with AgentClient(peer, self.key()) as client:
            info: m.NodeInfo = await client.call("node_info", m.Empty())
            receiver = RemoteReceiver(client, name)
            destination = await receiver.state()
        if post_hooks and not info.client_hooks:
            raise UsageError(
                f"node {peer.name} does not run hooks given on the command line (--post-hook); "
                "set allow_client_hooks = true in its agent.toml, or configure the hooks there"
            )
        source = await sender.source()
        plan_replication(with_pending_snapshot(source), destination, PlanOptions())
        copy = await self.volumes.get(name)
        needed = _space_needed(copy.referenced, destination)
        if needed > info.pool_free * (1 - SPACE_MARGIN):
            raise ZflockError(
                f"not enough space on {peer.name}: moving {name} needs about "
                f"{format_bytes(needed)}, its pool has {format_bytes(info.pool_free)} free"
            )
        first = (
            f"incremental from the replica on {peer.name} "
            f"({len(destination.snapshots)} snapshot(s) there)"
            if destination.exists
            else f"full send of about {format_bytes(copy.referenced)} (no replica on {peer.name})"
        )
        hooks = self.config.hooks_for(name)
        end = "destroy" if args.destroy_source else "keep as a read-only replica"
        return [
            f"pre-copy round 1: {first}",
            f"more rounds until the final delta fits half of {args.max_downtime:g} s "
            f"(at most {args.max_rounds} rounds)",
            f"cutover: pre-cutover hooks ({len(args.pre_hooks) + bool(hooks.pre_cutover)}), "
            f"fence {self.config.node} (readonly=on, unmount), final snapshot and delta, "
            f"verify its GUID on {peer.name}",
            f"promote {peer.name} to epoch {ownership.epoch + 1}, mount at "
            f"{self.config.mountpoint(name)}, post-cutover hooks ({len(post_hooks)} + "
            f"{peer.name}'s own)",
            f"then {end} the copy on {self.config.node}",
            f"space: {peer.name} has {format_bytes(info.pool_free)} free, needs about "
            f"{format_bytes(needed)}",
        ]

    async def _run(
        self,
        job: Job,
        spec: MoveSpec,
        ownership: Ownership,
        peer: NodeEntry,
        cli_hooks: dict[str, list[list[str]]],
    ) -> m.MoveReport:
        started = time.monotonic()
        name = spec.volume
        context = self._context(name, spec.source, spec.destination, spec.epoch + 1)
        source = self._source(name, context, cli_hooks)
        sender = ZfsSender(self.zfs, self.config.dataset(name), self.config.node)
        identity = SourceIdentity.of(name, ownership, self.config.node)
        async with AgentClient(peer, self.key()) as client:
            receiver = RemoteReceiver(client, name)
            await receiver.state()  # learns whether the peer can resume
            local = await self.zfs.capabilities()
            options = PlanOptions(
                resume_supported=local.resume_tokens and receiver.resume_supported
            )
            destination = RemoteDestination(
                client, receiver, peer, self.key(), name, ownership.id, spec.epoch + 1,
                resolve_timeout=spec.deadlines.resolve,
            )  # fmt: skip
            phase = {"label": "pre-copy round 1"}

            def report(p: StepProgress) -> None:
                job.progress(f"{phase['label']}: {p.step}", p.bytes, p.total, p.rate)
                move.progressed()  # the final delta's deadline counts time without progress

            async def replicate_once() -> Outcome:
                return await replicate(sender, receiver, identity, options, report)

            def emit(event: dict[str, Any]) -> None:
                if event["kind"] == "round":
                    phase["label"] = f"pre-copy round {event['round'] + 1}"
                elif event["kind"] == "cutover":
                    phase["label"] = "cutover"
                job.step = f"{phase['label']}"
                job.publish(event)

            move = Move(spec, source, destination, replicate_once, emit)
            try:
                result = await move.run()
            except Exception:
                # Whatever failed, a marker left on the source means a cutover that
                # is not settled: keep at it in the background (docs/move.md).
                if await self.marker(name) is not None:
                    self.spawn_recovery(name)
                raise
            if result.demotion_pending:
                self.spawn_recovery(name)
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

    # -- recovery -----------------------------------------------------------------------

    async def _recover(self, name: str, ownership: Ownership, marker: Marker) -> Recovery:
        """Finish or undo the interrupted move `marker` describes (volume lock held)."""
        context = self._context(name, self.config.node, marker.destination, marker.new_epoch)
        source = self._source(name, context, {})
        try:
            peer: NodeEntry | None = load_inventory(self.config.cluster).node(marker.destination)
        except ZflockError:
            peer = None  # not in the inventory any more: it cannot be asked
        destination = None
        if peer is not None:
            destination = RemoteDestination(
                None, None, peer, self.key(), name, ownership.id, marker.new_epoch,
                resolve_timeout=self.config.deadlines.resolve,
            )  # fmt: skip

        async def peers() -> int:
            return await self._peer_epoch(name, ownership.id, marker.destination)

        done = await recover_move(
            name, marker, ownership.role, ownership.epoch, source, destination, peers
        )
        level = logging.INFO if done.action != WAIT else logging.WARNING
        log.log(level, "interrupted move %s: %s (%s)", marker.format(), done.action, done.reason,
                extra={"volume": name})  # fmt: skip
        return done

    async def _peer_epoch(self, name: str, volume_id: str, destination: str) -> int:
        """The highest epoch of this volume (by id) that the nodes other than this one
        and the move's destination (which answers for itself) report; those that cannot
        be reached within PEER_EPOCH_SECONDS count for nothing."""
        seconds = PEER_EPOCH_SECONDS

        async def ask(peer: NodeEntry) -> int:
            try:
                async with asyncio.timeout(seconds):
                    async with AgentClient(peer, self.key(), timeout=seconds) as client:
                        found: m.VolumeList = await client.call(
                            "list_volumes", m.ListVolumes(names=[name])
                        )
            except (ZflockError, TimeoutError, OSError):
                return 0
            return max((c.epoch for c in found.volumes if c.id == volume_id), default=0)

        others = [
            n for n in load_inventory(self.config.cluster).nodes.values()
            if n.name not in (self.config.node, destination)
        ]  # fmt: skip
        return max(await asyncio.gather(*(ask(n) for n in others)), default=0)

    def spawn_recovery(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._recovery_loop(name))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _recovery_loop(self, name: str) -> None:
        delay = 1.0
        while True:
            try:
                async with self.locks.hold(name, "recover move", wait=True):
                    ownership = await self.volumes.ownership(name)
                    marker = await self.marker(name)
                    if marker is None:
                        return
                    if (await self._recover(name, ownership, marker)).action != WAIT:
                        return
            except (ZflockError, HookFailed) as exc:
                log.warning("recovering a move: %s; retrying", exc, extra={"volume": name})
            except Exception:
                # A background task that died would leave the source fenced for good.
                log.exception("recovering a move failed unexpectedly; retrying",
                              extra={"volume": name})  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECOVERY_RETRY_MAX)

    async def recover_all(self) -> None:
        """At start: finish or undo every move this node's copies say was interrupted."""
        copies = await self.volumes.list()
        self.observer.emit(copies_listed(copies))
        for volume in copies:
            if volume.move:
                log.warning("found an interrupted move (%s)", volume.move,
                            extra={"volume": volume.name})  # fmt: skip
                self.spawn_recovery(volume.name)

    # -- the destination's side ---------------------------------------------------------

    def _destination(self, name: str) -> ZfsDestination:
        name = validate_component(name, "volume name")
        return ZfsDestination(
            self.zfs, self.config.dataset(name), self.config.mountpoint(name), self.config.node
        )

    async def promote(self, req: PromoteRequest) -> Promotion:
        destination = self._destination(req.name)
        post = self._hooks_arg(req.post_hooks, "--post-hook")

        async def post_hooks(r: PromoteRequest) -> list[str]:
            context = self._context(r.name, r.source, self.config.node, r.epoch)
            try:
                await self._run_hooks(r.name, "post_cutover", post, context)
            except HookFailed as exc:
                log.error("%s", exc, extra={"volume": r.name})
                return [str(exc)]
            return []

        async with self.locks.hold(req.name, "promote", wait=True):
            return await destination.promote(req, post_hooks)

    async def resolve(self, args: m.ResolveMove) -> m.MoveResolution:
        destination = self._destination(args.name)
        async with self.locks.hold(args.name, "resolve move", wait=True):
            answer = await destination.resolve(args.volume_id, args.move_id, args.epoch)
        return m.MoveResolution(status=answer.answer, epoch=answer.epoch)


def _space_needed(referenced: int, destination: ReplicaInfo) -> int:
    """About how much the destination's pool must take: all of it, or what the replica lacks."""
    if not destination.exists or not destination.snapshots:
        return referenced
    have = destination.snapshots[-1].size or 0
    return max(referenced - have, 0)
