"""`zflock rejoin VOLUME --node NODE`: a stale copy becomes a replica of the primary again."""

from __future__ import annotations

from pathlib import Path

import click

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    collect_copies,
    console,
    load_cluster,
    print_json,
    run,
    to_jsonable,
    views_of,
    warn,
)
from zflock.cli.volumes import validate_volume
from zflock.cluster.config import validate_node_name
from zflock.errors import UsageError, ZflockError
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.rpc.selffence_messages import Rejoin, RejoinReport
from zflock.units import format_bytes


def keep_command(name: str, node: str, primary: m.VolumeInfo | None) -> str | None:
    """The command that keeps the rejoined copy fresh, unless the primary's policy already
    lists it: a rejoin never changes the policy (docs/failover.md)."""
    policy = primary.policy if primary is not None else None
    if policy is not None and node in policy.targets:
        return None
    every = policy.every if policy is not None and policy.every else "INTERVAL"
    return f"zflock replicate {name} --to {node} --every {every}"


async def _rejoin(
    c: Cluster, name: str, node: str, discard: bool, reseed: bool
) -> tuple[RejoinReport, str | None]:
    views, unreachable = views_of(await collect_copies(c, [name]))
    if node in {r.node for r in unreachable}:
        raise ZflockError(f"node {node} does not answer; it must be reachable to rejoin")
    view = next((v for v in views if v.name == name), None)
    if view is None or view.status(node) is None:
        raise ZflockError(f"node {node} holds no copy of {name}")
    if view.primary is None:
        silent = ", ".join(r.node for r in unreachable) or "none"
        raise ZflockError(f"no reachable primary of {name} to rejoin (unreachable: {silent})")
    if view.primary == node:
        raise UsageError(f"{node} holds the primary of {name}; rejoin a stale copy or a replica")
    args = Rejoin(name=name, primary=view.primary, discard_diverged=discard, reseed=reseed)
    report: RejoinReport = await c.call(node, "rejoin", args)
    primary = next((x for x in view.copies if x.node == view.primary), None)
    return report, keep_command(name, node, primary)


@app.command("rejoin")
@click.argument("volume")
@click.option("--node", "node", required=True, help="The node whose stale copy rejoins.")
@click.option(
    "--discard-diverged",
    is_flag=True,
    help="Destroy the copy's writes since the last common snapshot instead of keeping them.",
)
@click.option(
    "--reseed",
    is_flag=True,
    help="No common snapshot: keep the old copy renamed aside and copy the volume in full.",
)
@cluster_options
def rejoin_command(
    volume: str,
    node: str,
    discard_diverged: bool,
    reseed: bool,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Turn NODE's stale copy of VOLUME back into a replica of its current primary.

    Its writes after the newest snapshot it shares with the primary (by GUID)
    are kept first, in a dataset <volume>-diverged-<time> beside the volumes
    that zflock never lists, prunes or destroys (--discard-diverged destroys
    them instead); then the copy is rolled back to that snapshot and the
    primary sends what came after it. Without a common snapshot it is refused:
    --reseed keeps the whole old copy renamed aside and copies the volume in
    full. Exit 1 when refused or failed, 2 on bad usage.

    The primary's replication policy is not changed: when it does not list
    NODE, the command that would (`zflock replicate VOLUME --to NODE --every
    ...`) is printed.

    --json prints: volume, node, primary, epoch, common, preserved, discarded,
    mode, bytes, seconds, warnings, keep_command (that command, or null).
    """
    name = validate_volume(volume)
    c = load_cluster(cluster, identity, timeout)
    target = c.inventory.node(validate_node_name(node)).name
    report, keep = run(_rejoin(c, name, target, discard_diverged, reseed))
    if json_out:
        print_json({**to_jsonable(report), "keep_command": keep})
        return
    base = f"from @{report.common}" if report.common else "in full"
    console.print(
        f"{report.node} rejoined {report.volume} as a replica of {report.primary} "
        f"(epoch {report.epoch}): {report.mode}, {format_bytes(report.bytes)} sent {base} "
        f"in {report.seconds:.2f} s",
        markup=False,
    )
    if report.preserved:
        console.print(f"diverged data kept in {report.preserved}", markup=False)
    if report.discarded:
        warn(f"discarded: {', '.join(report.discarded)}")
    if keep is not None:
        console.print(
            f"{report.node} is not a target of {report.volume}'s replication policy; to keep "
            f"it fresh: {keep}",
            markup=False,
        )
    for message in report.warnings:
        warn(message)
