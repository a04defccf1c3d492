"""`zflock replicate` (one sync of a volume to a node) and `zflock status` (running jobs)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    console,
    load_cluster,
    print_json,
    run,
    to_jsonable,
    warn,
)
from zflock.cli.progress import StepBars, progress_bars
from zflock.cli.volumes import Links, collect_schedules, find_primary, validate_volume
from zflock.cluster.config import validate_node_name
from zflock.cluster.ownership import ROLE_PRIMARY
from zflock.errors import UsageError
from zflock.replication.policy import parse_every, parse_targets
from zflock.replication.retention import parse_keep
from zflock.rpc import messages as m
from zflock.rpc.cluster import NodeResult
from zflock.rpc.messages import Empty
from zflock.rpc.schedule_messages import ScheduleInfo
from zflock.units import format_age, format_bytes, format_duration


@app.command("replicate")
@click.argument("volume")
@click.option(
    "--to", "to", help="Node(s) that get (or keep) a replica, comma-separated: node2,node3."
)
@click.option(
    "--every",
    "every",
    is_flag=False,
    flag_value="",
    default=None,
    help="Keep the replicas continuously, e.g. --every 30s (alone: the node's default); "
    "stored on the volume.",
)
@click.option("--keep", "keep", help="Keep rules on the primary, e.g. '24x1h | 14x1d, last=10'.")
@click.option("--keep-replica", "keep_replica", help="Keep rules on each replica.")
@click.option(
    "--stop", is_flag=True, help="Remove the stored policy (only the --to nodes if given)."
)
@click.option(
    "--force-rollback",
    is_flag=True,
    help="Allow destroying snapshots on the replica that the source does not have.",
)
@click.option(
    "--no-wait", is_flag=True, help="Fail at once if another operation runs on the volume."
)
@cluster_options
def replicate_command(
    volume: str,
    to: str | None,
    every: str | None,
    keep: str | None,
    keep_replica: str | None,
    stop: bool,
    force_rollback: bool,
    no_wait: bool,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Sync a volume to a node once: snapshot the primary, send what the replica lacks.

    The first sync sends everything; later ones send only the changes. The
    transfer runs as a job in the primary's agent: if this command is
    interrupted the job finishes anyway (see `zflock status`), and running
    the same command again completes an interrupted transfer.

    A replica that has diverged from the primary (snapshots the primary lacks)
    is an error; --force-rollback discards those snapshots.

    With --every the policy (targets, interval, keep rules) is stored on
    the primary, then each target is synced once; --stop removes it. From
    then on the primary's agent keeps the replicas itself, every interval
    (`zflock status` shows the schedule, `zflock ls` each replica's lag).

    --json prints: volume, source, destination, snapshot, guid, up_to_date,
    steps (kind, snapshot, base, bytes, seconds), bytes, seconds, warnings;
    with --every, {"policy": {volume, node, targets, every, keep,
    keep_replica, serial, not_told}, "syncs": [those]}; with --stop, the
    policy left, its serial, and not_told: the dropped targets that could not be
    told at once (node: why; they keep their old copy of the policy, which a
    failover could adopt: docs/failover.md).
    """
    name = validate_volume(volume)
    if stop or every is not None:
        _policy_command(
            name, to, every, keep, keep_replica, stop, force_rollback, no_wait,
            cluster, identity, json_out, timeout,
        )  # fmt: skip
        return
    if keep is not None or keep_replica is not None:
        raise UsageError("--keep and --keep-replica belong to a policy: give --every too")
    if to is None:
        raise UsageError("missing --to: the node that gets a replica")
    target = validate_node_name(to)
    c = load_cluster(cluster, identity, timeout)
    c.inventory.node(target)

    async def go(bars: StepBars) -> m.ReplicationReport:
        primary = await find_primary(c, name)
        if primary == target:
            raise UsageError(f"{target} is the primary of {name}; replicate to another node")
        args = m.Replicate(name=name, to=target, force_rollback=force_rollback, wait=not no_wait)
        async with c.client(primary) as client:
            return await client.call("replicate", args, on_event=bars)

    progress = None if json_out else progress_bars()
    with progress or contextlib.nullcontext():
        report = run(go(StepBars(progress)))
    if json_out:
        print_json(report)
        return
    for warning in report.warnings:
        warn(f"{name}: {warning}")
    if report.up_to_date:
        console.print(
            f"{name} on {report.destination} is up to date with {report.source} "
            f"(@{report.snapshot}, {report.seconds:.1f} s)",
            markup=False,
        )
        return
    rate = report.bytes / report.seconds if report.seconds else 0
    console.print(
        f"replicated {name} {report.source} -> {report.destination}: "
        f"{format_bytes(report.bytes)} in {report.seconds:.1f} s "
        f"({format_bytes(rate)}/s, {len(report.steps)} step(s)), now at @{report.snapshot}",
        markup=False,
    )


def _policy_command(
    name: str,
    to: str | None,
    every: str | None,
    keep: str | None,
    keep_replica: str | None,
    stop: bool,
    force_rollback: bool,
    no_wait: bool,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Store (--every) or remove (--stop) the policy; after storing, sync each target once."""
    targets = parse_targets(to) if to is not None else ()
    if stop:
        if every is not None or keep is not None or keep_replica is not None:
            raise UsageError("--stop takes only --to")
    else:
        if not targets:
            raise UsageError("missing --to: the node(s) to keep replicas on")
        if every:  # "" = the primary's default, checked there
            parse_every(every)
        for rules in (keep, keep_replica):
            if rules is not None:
                parse_keep(rules)
    c = load_cluster(cluster, identity, timeout)
    for target in targets:
        c.inventory.node(target)
    request = m.SetPolicy(
        name=name, to=list(targets), every=every, keep=keep, keep_replica=keep_replica, stop=stop
    )

    async def go(bars: StepBars) -> tuple[m.PolicyInfo, list[m.ReplicationReport]]:
        primary = await find_primary(c, name)
        if primary in targets:
            raise UsageError(f"{primary} is the primary of {name}; replicate to another node")
        async with c.client(primary) as client:
            info: m.PolicyInfo = await client.call("set_policy", request)
            reports = []
            for target in [] if stop else targets:
                args = m.Replicate(
                    name=name, to=target, force_rollback=force_rollback, wait=not no_wait
                )
                reports.append(await client.call("replicate", args, on_event=bars))
        return info, reports

    progress = None if (json_out or stop) else progress_bars()
    with progress or contextlib.nullcontext():
        info, reports = run(go(StepBars(progress)))
    if json_out:
        print_json(info if stop else {"policy": info, "syncs": reports})
        return
    if not info.targets:
        console.print(f"{name}: no replication policy", markup=False)
    else:
        console.print(
            f"{name}: replicated from {info.node} to {','.join(info.targets)} every "
            f"{info.every}; keep {info.keep!r}, on replicas {info.keep_replica!r}",
            markup=False,
        )
    for node, why in sorted(info.not_told.items()):
        warn(
            f"{name}: could not tell {node} that it is no longer a target ({why}): its copy "
            "of the policy stays the old one, which a failover adopting only from it revives "
            f"(docs/failover.md); run the --stop again once {node} answers"
        )
    for report in reports:
        for warning in report.warnings:
            warn(f"{name}: {warning}")
        console.print(
            f"synced {name} {report.source} -> {report.destination}: "
            f"{format_bytes(report.bytes)}, now at @{report.snapshot}",
            markup=False,
        )


@app.command("status")
@cluster_options
def status_command(
    cluster: Path | None, identity: Path | None, json_out: bool, timeout: float
) -> None:
    """Jobs (replications, moves) running or recently finished on every node,
    the replication policies stored on the primaries, and their schedules.

    Exit code 1 if a node could not be asked.

    --json prints {"jobs": [...], "policies": [...], "schedules": [...],
    "unreachable": [{"node", "error"}]}; each job: id, kind, volume, node,
    target, state (running, done, failed), started (unix s), bytes, total
    (bytes or null), rate (bytes/s), step, error; each policy: volume, node
    (the primary), targets, every, keep, keep_replica, error (a damaged
    policy, or null); each schedule (one per volume and target of a
    continuous policy, from the primary's scheduler): volume, node, target,
    every (s), state (running, waiting, failing), next_run (unix s, null
    while running), running, failures (in a row: the backoff's exponent),
    last_result (never, ok, failed), last_error, last_success (unix s),
    last_job, last_bytes, last_kind (full, incremental, null: up to date).
    """
    c = load_cluster(cluster, identity, timeout)

    async def ask() -> tuple[list[NodeResult], list[NodeResult], Links]:
        jobs, listed, links = await asyncio.gather(
            c.call_all("jobs", Empty()),
            c.call_all("list_volumes", m.ListVolumes()),
            collect_schedules(c, None),
        )
        return jobs, listed, links

    results, listed, links = run(ask())
    jobs = [j for r in results if r.ok for j in r.value.jobs]
    policies = _policies([v for r in listed if r.ok for v in r.value.volumes])
    schedules = sorted(links.values(), key=lambda s: (s.volume, s.target))
    failed = [r for r in results if not r.ok]
    jobs.sort(key=lambda j: -j.started)
    if json_out:
        print_json(
            {
                "jobs": jobs,
                "policies": policies,
                "schedules": [{**to_jsonable(s), "state": _link_state(s)} for s in schedules],
                "unreachable": [{"node": r.node, "error": str(r.error)} for r in failed],
            }
        )
    else:
        table = Table(box=None, pad_edge=False)
        for col in ("JOB", "KIND", "VOLUME", "FROM", "TO", "STATE", "STEP", "DONE", "AGE"):
            table.add_column(col, overflow="ellipsis", no_wrap=col != "STATE")
        now = time.time()
        for j in jobs:
            done = format_bytes(j.bytes) + (f" / {format_bytes(j.total)}" if j.total else "")
            table.add_row(
                j.id, j.kind, j.volume, j.node, j.target,
                j.state if not j.error else f"{j.state}: {j.error}",
                j.step, done, f"{now - j.started:.0f}s",
            )  # fmt: skip
        console.print(table)
        if policies:
            console.print()
            rows = Table(box=None, pad_edge=False)
            for col in ("VOLUME", "PRIMARY", "TO", "EVERY", "KEEP", "KEEP ON REPLICAS"):
                rows.add_column(col)
            for p in policies:
                every = p["every"] or "-"
                rows.add_row(
                    p["volume"], p["node"], ",".join(p["targets"]) or "-",
                    f"damaged: {p['error']}" if p["error"] else every,
                    p["keep"] or "-", p["keep_replica"] or "-",
                )  # fmt: skip
            console.print(rows)
        if schedules:
            console.print()
            console.print(_schedule_table(schedules, now))
    for r in failed:
        warn(str(r.error))
    if failed:
        sys.exit(1)


def _policies(copies: list[m.VolumeInfo]) -> list[dict[str, Any]]:
    """The policy (or why it is damaged) of each primary copy that has one."""
    found = []
    for copy in sorted(copies, key=lambda c: (c.name, c.node)):
        if copy.role != ROLE_PRIMARY or (copy.policy is None and copy.policy_error is None):
            continue
        policy = copy.policy or m.PolicyInfo(copy.name, copy.node, [], None, None)
        found.append({**to_jsonable(policy), "error": copy.policy_error})
    return found


def _link_state(s: ScheduleInfo) -> str:
    """running / waiting / failing (backing off): what the scheduler is doing with a link."""
    if s.running:
        return "running"
    return "failing" if s.failures else "waiting"


def _schedule_table(schedules: list[ScheduleInfo], now: float) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("VOLUME", "FROM", "TO", "EVERY", "STATE", "NEXT RUN", "LAST RUN"):
        table.add_column(col, overflow="fold")
    for s in schedules:
        state = _link_state(s)
        if s.failures:
            state += f" ({s.failures} in a row, backing off)"
        next_run = "-" if s.next_run is None else f"in {format_age(max(0.0, s.next_run - now))}"
        if s.last_result == "failed":
            last = f"failed: {s.last_error}"
        elif s.last_result == "ok":
            sent = f"{s.last_kind} {format_bytes(s.last_bytes)}" if s.last_kind else "up to date"
            ago = format_age(now - s.last_success) if s.last_success else "?"
            last = f"ok {ago} ago ({sent})"
        else:
            last = "never"
        table.add_row(
            s.volume, s.node, s.target, format_duration(round(s.every)), state, next_run, last
        )
    return table
