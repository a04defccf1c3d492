"""`zflock failover VOLUME [--to NODE] [--force]`: promote a replica when the primary is gone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from zflock.agent.failover import FailoverRefused, gather, refusal_text
from zflock.cli.app import app
from zflock.cli.common import cluster_options, console, load_cluster, print_json, run, warn
from zflock.cli.move import parse_hook
from zflock.cli.volumes import validate_volume
from zflock.cluster.config import validate_node_name
from zflock.move import failover as rule
from zflock.rpc.cluster import Cluster
from zflock.rpc.failover_messages import FailoverReport, FailoverRequest
from zflock.units import format_age


async def _failover(
    c: Cluster, name: str, to: str | None, force: bool, post: list[list[str]]
) -> FailoverReport:
    # Choose the target and refuse early by the same rule the target applies again.
    got = await gather(c, name, c.inventory, deadline=c.timeout)
    plan = rule.decide(got.situation, to=to, force=force)
    if isinstance(plan, rule.Refusal):
        raise FailoverRefused(refusal_text(plan, got.errors))
    args = FailoverRequest(name=name, force=force, post_hooks=post)
    report: FailoverReport = await c.call(plan.target, "failover", args)
    return report


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S UTC")


@app.command("failover")
@click.argument("volume")
@click.option("--to", "to", help="Promote the replica on this node (default: the freshest).")
@click.option(
    "--force",
    is_flag=True,
    help="Promote even if a newer replica is reachable, or before the old primary must "
    "have fenced itself (risks two writers: docs/failover.md).",
)
@click.option(
    "--post-hook",
    "post_hooks",
    multiple=True,
    help="Command run on the new primary once it is writable (as for a move).",
)
@cluster_options
def failover_command(
    volume: str,
    to: str | None,
    force: bool,
    post_hooks: tuple[str, ...],
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Make the freshest reachable replica of VOLUME its primary when the primary is gone.

    Refused while the primary's agent answers (use `zflock move`), when --to names
    a replica older than another reachable one, and until the old primary has been
    unreachable, as every answering node sees it, for longer than its
    self_fence_after plus a margin (the error shows the time left); --force skips
    the last two checks. The new epoch is above every epoch seen for the volume.
    Prints the snapshot promoted and its age: the writes made after it are lost.
    Exit 1 when refused or failed, 2 on bad usage.

    --json prints: volume, volume_id, node, epoch, snapshot, snapshot_guid,
    snapshot_time, promoted_at, loss_window_s, unreachable, old_primary, move_id,
    seconds, forced, policy (the policy the new primary keeps: targets, every,
    keep, keep_replica; or null), policy_from (the node whose copy of the
    policy was adopted: the highest serial among the answering nodes; or
    null), policy_serial (the serial stored with it), hook_errors, warnings.
    """
    name = validate_volume(volume)
    c = load_cluster(cluster, identity, timeout)
    target = c.inventory.node(validate_node_name(to)).name if to else None
    post = [parse_hook(h, "--post-hook") for h in post_hooks]
    report = run(_failover(c, name, target, force, post))
    if json_out:
        print_json(report)
        return
    age = (
        f"{format_age(report.loss_window_s)} old at promotion (writes after "
        f"{_when(report.snapshot_time)} are lost)"
        if report.loss_window_s is not None and report.snapshot_time is not None
        else "of unknown age"
    )
    console.print(
        f"failed over {report.volume} to {report.node} at epoch {report.epoch}: newest "
        f"snapshot @{report.snapshot}, {age}",
        markup=False,
    )
    console.print(
        f"loss window: {report.loss_window_s if report.loss_window_s is not None else '?'} s; "
        f"could not ask: {', '.join(report.unreachable) or 'none'}; took {report.seconds:.2f} s",
        markup=False,
    )
    came = (
        f" (adopted from {report.policy_from}'s copy, stored as serial {report.policy_serial})"
        if report.policy_from
        else ""
    )
    if report.policy is not None:
        every = f" every {report.policy.every}" if report.policy.every else ""
        console.print(f"replication: {', '.join(report.policy.targets)}{every}{came}", markup=False)
    else:
        console.print(f"replication: no policy{came}", markup=False)
    for forced in report.forced:
        warn(f"forced: {forced}")
    for message in [*report.warnings, *report.hook_errors]:
        warn(message)
