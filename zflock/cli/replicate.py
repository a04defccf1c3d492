"""`zflock replicate` (one sync of a volume to a node) and `zflock status` (running jobs)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    console,
    err_console,
    load_cluster,
    print_json,
    run,
    warn,
)
from zflock.cli.volumes import find_primary, validate_volume
from zflock.cluster.config import validate_node_name
from zflock.errors import UsageError
from zflock.rpc import messages as m
from zflock.rpc.messages import Empty
from zflock.units import format_bytes


class StepBars:
    """One progress bar per step, fed by the agent's progress events."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if self.progress is None or event.get("kind") != "progress":
            return
        step = str(event.get("step", ""))
        done = int(event.get("bytes") or 0)
        total = event.get("total")
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(step, total=total)
        # An estimate can be short (zfs-fuse has none): grow it rather than overflow.
        if total is not None:
            total = max(int(total), done)
        self.progress.update(self.tasks[step], completed=done, total=total)


def _progress() -> Progress | None:
    if not err_console.is_terminal:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


@app.command("replicate")
@click.argument("volume")
@click.option("--to", "to", required=True, help="Node that gets (or keeps) a replica.")
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
    to: str,
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

    --json prints: volume, source, destination, snapshot, guid, up_to_date,
    steps (kind, snapshot, base, bytes, seconds), bytes, seconds, warnings.
    """
    name = validate_volume(volume)
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

    progress = None if json_out else _progress()
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


@app.command("status")
@cluster_options
def status_command(
    cluster: Path | None, identity: Path | None, json_out: bool, timeout: float
) -> None:
    """Jobs (replications, moves) running or recently finished on every node.

    Exit code 1 if a node could not be asked.

    --json prints {"jobs": [...], "unreachable": [{"node", "error"}]}; each
    job: id, kind, volume, node, target, state (running, done, failed),
    started (unix s), bytes, total (bytes or null), rate (bytes/s), step, error.
    """
    c = load_cluster(cluster, identity, timeout)
    results = run(c.call_all("jobs", Empty()))
    jobs = [j for r in results if r.ok for j in r.value.jobs]
    failed = [r for r in results if not r.ok]
    jobs.sort(key=lambda j: -j.started)
    if json_out:
        print_json(
            {
                "jobs": jobs,
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
    for r in failed:
        warn(str(r.error))
    if failed:
        sys.exit(1)
