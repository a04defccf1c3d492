"""The `failover` operation: promote this node's replica when the volume's primary is gone.

The CLI chooses this node and sends `failover`; nothing it saw is trusted.
Under the volume's lock the agent asks every inventory node again
(`gather`: their copies, their snapshots, how long each has had no answer
from the nodes that do not answer), lets the pure rule decide
(zflock.move.failover.decide, with this node as the target), and only then
promotes through the same code as a move's destination
(zflock.move.zfs_destination: the fencing rule re-checks the copy, writes
`zflock:promoted-by=<id>/<epoch>` first, then epoch, role, writable,
mounted). Post-cutover hooks run as after a move, and the replication
policy follows: the newest copy any answering node holds (highest serial;
zflock.replication.schedule.policy_after_failover), stored with the promotion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncssh

from zflock.agent.hooks import HookFailed, run_hooks, validate_hook
from zflock.agent.locks import VolumeLocks
from zflock.cluster.config import AgentConfig, Inventory, load_inventory
from zflock.cluster.view import cluster_view
from zflock.errors import UsageError, ZflockError
from zflock.move import failover as rule
from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.move.marker import new_move_id
from zflock.move.zfs_destination import ZfsDestination
from zflock.replication.policy import (
    PROP_EVERY,
    PROP_KEEP,
    PROP_KEEP_REPLICA,
    PROP_REPLICATE_TO,
    DamagedPolicy,
    copy_from_value,
    policy_from_properties,
)
from zflock.replication.schedule import StoredPolicy, policy_after_failover
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.rpc.failover_messages import FailoverPolicy, FailoverReport, FailoverRequest
from zflock.rpc.openssh import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL
from zflock.rpc.selffence_messages import LeaseStatus
from zflock.units import format_duration
from zflock.zfs import Zfs, validate_component

log = logging.getLogger("zflock.agent.failover")

# How long one round of asking may take per node, connecting included: a node that
# accepts connections but never answers counts as unreachable, it does not hold us.
# Short is safe: a node wrongly counted unreachable was heard from moments ago by the
# others' pings, which refuses the failover (move/failover.py, check 5).
ASK_SECONDS = 5.0
# What an old primary's requests hold a replica's lock for (agent/handlers.py,
# agent/prune_replica.py), and how long such a request outlives a dead primary:
# the agents' keepalive (rpc/openssh.py) gives a silent connection up after
# KEEPALIVE_COUNT unanswered probes, one every KEEPALIVE_INTERVAL, plus one more:
# up to 20 s after the primary's last packet. One interval more on top, because the
# cut receive must still be killed and reaped before its lock is free: with 20 s a
# failover asked right after the cut waited 19-20 s of them (tests/failover/
# test_failover_waits.py), too close for a loaded host.
FROM_PRIMARY = frozenset({"receive", "prune replica", "store the policy copy"})
PRIMARY_GONE = KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 2)


class FailoverRefused(ZflockError):
    """The rules say no (now); the message says why and what to do instead."""


@dataclass(frozen=True)
class Gathered:
    situation: rule.Situation[m.VolumeInfo]
    errors: dict[str, str]  # node -> why it could not be asked


def _readings(
    results: Sequence[tuple[str, object]], unreachable: Sequence[str]
) -> tuple[list[rule.Reading], dict[str, str], bool]:
    """Each answering node's `lease_status`, as readings of the nodes that did not answer."""
    readings, unreadable, active = [], {}, True
    for reporter, value in results:
        if isinstance(value, Exception) or not isinstance(value, LeaseStatus):
            unreadable[reporter] = str(value).splitlines()[0] if str(value) else "no answer"
            continue
        active = active and value.active
        wait = value.self_fence_after + value.margin
        seconds = {p.node: p.seconds for p in value.peers}
        for node in unreachable:
            if node in seconds:
                readings.append(rule.Reading(reporter, node, seconds[node], wait))
    return readings, unreadable, active


async def gather(
    cluster: Cluster, name: str, inventory: Inventory, deadline: float = ASK_SECONDS
) -> Gathered:
    """One round of asking every inventory node about `name` (each call bounded by
    `deadline` seconds, connecting included)."""
    nodes = sorted(inventory.nodes)
    listed = await cluster.call_all(
        "list_volumes", m.ListVolumes(names=[name]), nodes, deadline=deadline
    )
    answered = tuple(r.node for r in listed if r.ok)
    errors = {r.node: str(r.error) for r in listed if not r.ok}
    copies = [c for r in listed if r.ok for c in r.value.volumes if c.name == name]
    unreachable = [n for n in nodes if n not in answered]
    views = cluster_view(copies, unreachable)
    holders = sorted({c.node for c in copies})
    states = await cluster.call_all(
        "replica_state", m.ReplicaStateRequest(name=name), holders, deadline=deadline
    )
    silent = sorted(f"{r.node}: {r.error}" for r in states if not r.ok)
    if silent:
        # Without its snapshots a holder cannot be ranked: refuse this round rather than
        # guess ("it has none" would be wrong, and could pick a staler replica).
        raise FailoverRefused(f"a node holding {name} did not list its snapshots "
                              f"({'; '.join(silent)}); nothing changed, try again")  # fmt: skip
    candidates = {}
    for r in states:
        if not r.ok or not r.value.exists:
            continue
        snaps = tuple(r.value.snapshots)
        info = next((c for c in copies if c.node == r.node), None)
        newest_time = None
        if info is not None and snaps and info.latest_snapshot == snaps[-1].name:
            newest_time = info.latest_snapshot_time
        candidates[r.node] = rule.Candidate(r.node, snaps, newest_time)
    leases = await cluster.call_all("lease_status", m.Empty(), answered, deadline=deadline)
    readings, unreadable, active = _readings(
        [(r.node, r.value if r.ok else r.error) for r in leases], unreachable
    )
    situation = rule.Situation(
        volume=name, inventory=tuple(nodes), views=views, answered=answered,
        candidates=candidates, readings=tuple(readings),
        lease_active=active and len(nodes) >= 3, unreadable=unreadable,
    )  # fmt: skip
    return Gathered(situation, errors)


def refusal_text(refusal: rule.Refusal, errors: dict[str, str]) -> str:
    """The refusal's line, with the first reason a node could not be asked when that
    is what the refusal is about."""
    if refusal.kind in ("not-found", "no-replica", "no-majority") and errors:
        node, why = sorted(errors.items())[0]
        return f"{refusal.reason} ({node}: {why.splitlines()[0]})"
    return refusal.reason


def policy_props(info: m.PolicyInfo) -> dict[str, str]:
    """A listed policy back to the properties it was read from on its copy."""
    props = {
        PROP_REPLICATE_TO: ",".join(info.targets),
        PROP_EVERY: info.every,
        PROP_KEEP: info.keep,
        PROP_KEEP_REPLICA: info.keep_replica,
    }
    return {k: v for k, v in props.items() if v is not None}


def stored_policies(copies: Sequence[m.VolumeInfo]) -> tuple[list[StoredPolicy], list[str]]:
    """Every policy the answering copies hold, with its serial, and warnings for those
    that cannot be read (left out: a damaged copy is never taken for "no policy").

    A replica's copy of its primary's policy (`policy_copy`, sent with every sync),
    and a copy's own policy properties (a primary's leftover from before it was
    demoted: the policy as it was then, at its serial)."""
    stored, warnings = [], []
    for c in copies:
        if c.policy_copy is not None:
            try:
                copy = copy_from_value(c.policy_copy)
                policy_from_properties(copy.properties)
            except DamagedPolicy as exc:
                warnings.append(f"the policy copy on {c.node} is unreadable ({exc}); not used")
            else:
                stored.append(StoredPolicy(c.node, copy.serial, dict(copy.properties),
                                           copy.sender, copy.sent_at))  # fmt: skip
        if c.policy_error:
            warnings.append(f"the policy on {c.node} is damaged ({c.policy_error}); not used")
        elif c.policy is not None and c.policy.targets:
            stored.append(StoredPolicy(c.node, c.policy_serial or 0, policy_props(c.policy)))
        elif c.policy_serial is not None:  # it had removed its policy at this serial
            stored.append(StoredPolicy(c.node, c.policy_serial, {}))
    return stored, warnings


@dataclass(frozen=True)
class CarriedPolicy:
    """The policy a failover's promotion carries, and what the report says of it."""

    properties: dict[str, str]  # as PromoteRequest.policy: the promotion adds one to the serial
    report: FailoverPolicy | None
    source: str | None  # the node whose copy was adopted
    serial: int | None  # the serial the new primary stores
    old_primary: str | None
    warnings: list[str]


def carried_policy(
    copies: Sequence[m.VolumeInfo], unreachable: Sequence[str], target: str
) -> CarriedPolicy:
    """The newest policy any answering copy holds (highest serial), as the new primary
    keeps it (zflock.replication.schedule.policy_after_failover): without itself among
    the targets, the dead old primary never added (it comes back stale: rejoin, then
    add it with `zflock replicate`)."""
    stored, warnings = stored_policies(copies)
    adopted = policy_after_failover(stored, target)
    source = adopted.source
    old = None
    if source is not None and source.sender in unreachable:
        old = source.sender  # the primary that sent the newest copy is the one gone
    elif adopted.policy is not None:
        old = rule.old_primary(unreachable, (*adopted.policy.targets, target))
    asked_not = [n for n in unreachable if n != old]
    if source is None:
        warnings.append(
            "no replication policy on any reachable copy: set it again with "
            "`zflock replicate VOLUME --to NODE --every INTERVAL` if the volume had one"
        )
    elif asked_not:
        warnings.append(
            f"could not ask {', '.join(asked_not)} for its copy of the replication policy: "
            f"a newer one may be there (adopted serial {source.serial} from {source.node})"
        )
    if source is not None and source.sender is not None:
        warnings.extend(_stale_copy_warning(source))
    report = None
    if adopted.policy is not None:
        p = adopted.policy
        every = None if p.every is None else format_duration(p.every)
        report = FailoverPolicy(list(p.targets), every, p.keep.text(), p.keep_replica.text())
    return CarriedPolicy(
        properties=adopted.properties, report=report,
        source=None if source is None else source.node,
        serial=None if source is None else source.serial + 1,
        old_primary=old, warnings=warnings,
    )  # fmt: skip


def _stale_copy_warning(source: StoredPolicy) -> list[str]:
    """The --stop limit (docs/failover.md): a target dropped while it was unreachable
    keeps its old copy; a copy not refreshed for longer than its own interval promises
    may be such a one (or its syncs were failing): said, never decided on."""
    policy = policy_from_properties(source.properties)
    if policy is None or policy.every is None or source.sent_at is None:
        return []
    age = time.time() - source.sent_at
    if age <= 3 * policy.every + 60:
        return []
    return [
        f"the adopted policy copy (from {source.node}, serial {source.serial}) was last "
        f"refreshed {format_duration(int(age))} ago although it replicated every "
        f"{format_duration(policy.every)}: the old primary may have changed or stopped it "
        "since (a target unreachable during `zflock replicate --stop` keeps its old copy); "
        "check it with `zflock ls` and set it again"
    ]


class Failover:
    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        locks: VolumeLocks,
        peer_key: Callable[[], asyncssh.SSHKey | None],
    ) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.peer_key = peer_key

    def _cluster(self) -> tuple[Cluster, Inventory]:
        key = self.peer_key()
        if key is None:
            raise ZflockError("the agent has no host key loaded yet")
        inventory = load_inventory(self.config.cluster)
        return Cluster(inventory, key, timeout=ASK_SECONDS), inventory

    async def failover(self, args: FailoverRequest, call: object) -> FailoverReport:
        name = validate_component(args.name, "volume name")
        post = [validate_hook(h, "--post-hook") for h in args.post_hooks]
        if post and not self.config.allow_client_hooks:
            raise UsageError(
                f"node {self.config.node} does not run hooks given on the command line "
                "(--post-hook); set allow_client_hooks = true in its agent.toml"
            )
        started = time.monotonic()
        # The old primary's last stream (or prune) may still hold the replica's lock:
        # cut by the primary's death, it ends when the keepalive gives it up. Wait
        # that long for it rather than refuse; anything else here is refused at once.
        holder = self.locks.holder(name)
        from_primary = holder in FROM_PRIMARY
        if from_primary:
            log.warning("failover waits, at most %g s, for the old primary's %s to end",
                        PRIMARY_GONE, holder, extra={"volume": name})  # fmt: skip
        async with self.locks.hold(name, "failover", wait=from_primary, within=PRIMARY_GONE):
            cluster, inventory = self._cluster()
            got = await gather(cluster, name, inventory)
            plan = rule.decide(got.situation, to=self.config.node, force=args.force)
            if isinstance(plan, rule.Refusal):
                raise FailoverRefused(refusal_text(plan, got.errors))
            view = next(v for v in got.situation.views if v.id == plan.volume_id)
            carried = carried_policy(view.copies, got.situation.unreachable, self.config.node)
            old = carried.old_primary
            promotion, move_id = await self._promote(name, plan, old, post, carried.properties)
            promoted_at = time.time()
        report = FailoverReport(
            volume=name, volume_id=plan.volume_id, node=self.config.node, epoch=plan.epoch,
            snapshot=promotion.snapshot, snapshot_guid=plan.snapshot.guid,
            snapshot_time=plan.snapshot_time, promoted_at=promoted_at,
            loss_window_s=(
                None if plan.snapshot_time is None
                else round(max(0.0, promoted_at - plan.snapshot_time), 3)
            ),
            unreachable=list(plan.unreachable), old_primary=old, move_id=move_id,
            seconds=round(time.monotonic() - started, 3), forced=list(plan.forced),
            policy=carried.report, policy_from=carried.source, policy_serial=carried.serial,
            hook_errors=promotion.hook_errors, warnings=[*plan.warnings, *carried.warnings],
        )  # fmt: skip
        log.warning(
            "failed over to this node at epoch %d (snapshot %s, loss window %s s, forced: %s)",
            report.epoch, report.snapshot, report.loss_window_s, "; ".join(report.forced) or "no",
            extra={"volume": name},
        )  # fmt: skip
        return report

    async def _promote(
        self,
        name: str,
        plan: rule.Plan,
        old: str | None,
        post: list[list[str]],
        policy: dict[str, str],
    ) -> tuple[Promotion, str]:
        """The destination's promote of a move, for a failover: same rule, same order."""
        config = self.config
        destination = ZfsDestination(
            self.zfs, config.dataset(name), config.mountpoint(name), config.node
        )
        move_id = new_move_id()
        request = PromoteRequest(
            name=name, volume_id=plan.volume_id, move_id=move_id, epoch=plan.epoch,
            guid=plan.snapshot.guid, source=old or "", post_hooks=post, policy=policy,
        )  # fmt: skip

        async def post_hooks(req: PromoteRequest) -> list[str]:
            context = {
                "volume": name, "mountpoint": config.mountpoint(name), "source": old or "",
                "destination": config.node, "epoch": str(req.epoch),
            }  # fmt: skip
            hooks = config.hooks_for(name)
            commands = [c for c in (hooks.post_cutover,) if c]
            try:
                await run_hooks("post_cutover", [*commands, *req.post_hooks], context,
                                hooks.timeout)  # fmt: skip
            except HookFailed as exc:
                log.error("%s", exc, extra={"volume": name})
                return [str(exc)]
            return []

        return await destination.promote(request, post_hooks), move_id
