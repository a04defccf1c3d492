"""`zflock move VOLUME --to NODE`: move a volume's primary to another node."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    collect_copies,
    console,
    err_console,
    load_cluster,
    print_json,
    run,
    views_of,
)
from zflock.cli.common import warn as print_warning
from zflock.cli.progress import StepBars, progress_bars
from zflock.cli.volumes import primary_view, validate_volume
from zflock.cluster.config import validate_node_name
from zflock.errors import UsageError, ZflockError
from zflock.events import CutoverStep, PrecopyRound, StreamProgressed
from zflock.rpc import messages as m
from zflock.rpc.progress import event_from_wire
from zflock.units import format_bytes


def parse_hook(text: str, flag: str) -> list[str]:
    """A hook from the command line: split like a shell would, but never run by one."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}") from None
    if not argv:
        raise UsageError(f"{flag}: empty command")
    return argv


class MoveDisplay(StepBars):
    """Progress bars for each stream (on a terminal), and one line per round and cutover step
    (always, unless --json), so a log of the command shows how the move went."""

    def __init__(self, volume: str, progress: Progress | None, out: Console | None) -> None:
        super().__init__(progress)
        self.volume = volume
        self.out = progress.console if progress is not None else out
        self.previous: int | None = None

    def __call__(self, wire: dict[str, Any]) -> None:
        event = event_from_wire(wire, self.volume)
        if isinstance(event, StreamProgressed):
            self.show(event)
        elif self.out is None:
            return
        elif isinstance(event, PrecopyRound):
            done, seconds = event.bytes, event.seconds
            rate = f"{format_bytes(done / seconds)}/s" if seconds > 0 else "-"
            trend = ""
            if self.previous:
                trend = f"{(done - self.previous) / self.previous:+.0%}"
            self.previous = done
            self.out.print(
                f"pre-copy  round {event.round}  {event.kind:<11} "
                f"{format_bytes(done):>10} in {seconds:5.2f} s {rate:>12} {trend:>6}   "
                f"{event.decision}: {event.reason}",
                markup=False,
                soft_wrap=True,
            )
        elif isinstance(event, CutoverStep):
            self.out.print(
                f"cutover   {event.step:<18} {event.seconds:6.3f} s",
                markup=False,
                soft_wrap=True,
            )


def report_json(r: m.MoveReport) -> dict[str, Any]:
    def round_(x: m.RoundReport) -> dict[str, Any]:
        return {"round": x.round, "kind": x.kind, "bytes": x.bytes, "seconds": x.seconds}

    return {
        "volume": r.volume,
        "from": r.source,
        "to": r.destination,
        "epoch": r.epoch,
        "result": r.result,
        "reason": r.reason,
        "move_id": r.move_id,
        "rounds": [round_(x) for x in r.rounds],
        "final": round_(r.final) if r.final else None,
        "downtime_s": r.downtime_s,
        "total_s": r.total_s,
        "bytes": r.bytes,
        "cutover": r.cutover,
        "warnings": r.warnings,
        "plan": r.plan,
    }


@app.command("move")
@click.argument("volume")
@click.option("--to", "to", required=True, help="Node that becomes the volume's primary.")
@click.option(
    "--max-downtime",
    type=click.FloatRange(min=0.01, max=3600),
    default=1.0,
    show_default=True,
    help="Seconds of downtime to aim for: pre-copy rounds go on until the final delta fits.",
)
@click.option(
    "--max-rounds",
    type=click.IntRange(1, 100),
    default=8,
    show_default=True,
    help="Pre-copy rounds at most before cutting over.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Abandon the move (nothing fenced) instead of cutting over when the writer "
    "outpaces the link and --max-downtime cannot be met.",
)
@click.option(
    "--destroy-source",
    is_flag=True,
    help="Destroy the old copy after the move instead of keeping it as a replica.",
)
@click.option(
    "--dry-run", is_flag=True, help="Check everything and print the plan; change nothing."
)
@click.option(
    "--pre-hook",
    multiple=True,
    metavar="CMD",
    help="Run on the source before it is fenced (e.g. 'docker stop web'); a failure "
    "aborts the move. Split into arguments like a shell would, never run by one.",
)
@click.option(
    "--post-hook",
    multiple=True,
    metavar="CMD",
    help="Run on the destination once it is writable and mounted (e.g. 'docker start web').",
)
@click.option(
    "--rollback-hook",
    multiple=True,
    metavar="CMD",
    help="Run on the source when the move is undone (e.g. 'docker start web').",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for another operation on the volume to finish instead of failing at once.",
)
@cluster_options
def move_command(
    volume: str,
    to: str,
    max_downtime: float,
    max_rounds: int,
    strict: bool,
    destroy_source: bool,
    dry_run: bool,
    pre_hook: tuple[str, ...],
    post_hook: tuple[str, ...],
    rollback_hook: tuple[str, ...],
    wait: bool,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Move a volume to another node with seconds (usually under one) of downtime.

    While the volume's consumer keeps running, the source's agent sends a full
    copy (or only what an existing replica lacks) and then smaller and smaller
    deltas. When the next delta fits --max-downtime, it cuts over: pre-hooks
    (stop the container), fence the source (read-only; on zfs-fuse also
    unmounted), final snapshot and delta, verify its GUID on the destination,
    promote the destination (new epoch, writable, mounted at the same path),
    post-hooks (start the container). The old copy stays as a read-only
    replica, so moving back is cheap (--destroy-source removes it).

    The pre-hooks must stop every consumer of the volume. On zfs-fuse a file
    held open for writing could still be written after the fence (through
    the volume's mount or a container's bind mount), so a source still in use
    then (a file open for writing, a shell's working directory) makes the move
    roll back, naming the writers; `fuser -vm MOUNTPOINT` lists what holds it.

    Any failure before the destination is promoted rolls back: the source is
    writable and mounted again and the rollback hooks run. If the agents are
    cut off at the one moment that cannot be decided alone, the source stays
    read-only (never two writable copies); run the same command again, or
    restart the agent, to finish or undo the move.

    Hooks run on the agents' nodes and need `allow_client_hooks = true` in
    their agent.toml; hooks in agent.toml always run. Their environment has
    ZFLOCK_VOLUME, ZFLOCK_MOUNTPOINT, ZFLOCK_SOURCE, ZFLOCK_DESTINATION,
    ZFLOCK_EPOCH and ZFLOCK_HOOK. After an agent crash, the rollback that
    its recovery does runs the agent.toml rollback hooks only (the command
    line's are gone), also when the crash cut the pre-hooks short: make them
    harmless on a consumer still running (`docker start` is).

    Exit codes: 0 moved (or planned), 1 the move failed or was rolled back,
    or a post-hook failed after the move, 2 bad usage.

    --json prints: volume, from, to, epoch, result ("moved", "planned",
    "completed"), reason, move_id, rounds (round, kind, bytes, seconds),
    final (the cutover's delta), downtime_s, total_s, bytes, cutover
    (step -> seconds), warnings, plan (with --dry-run).
    """
    name = validate_volume(volume)
    target = validate_node_name(to)
    args = m.Move(
        name=name, to=target, max_downtime=max_downtime, max_rounds=max_rounds, strict=strict,
        destroy_source=destroy_source, dry_run=dry_run,
        pre_hooks=[parse_hook(h, "--pre-hook") for h in pre_hook],
        post_hooks=[parse_hook(h, "--post-hook") for h in post_hook],
        rollback_hooks=[parse_hook(h, "--rollback-hook") for h in rollback_hook],
        wait=wait,
    )  # fmt: skip
    c = load_cluster(cluster, identity, timeout)
    c.inventory.node(target)

    async def go(display: MoveDisplay) -> m.MoveReport:
        views, failed = views_of(await collect_copies(c, [name]))
        # A copy carrying a move marker is the source of an interrupted move:
        # its agent finishes or undoes that first.
        marked = [copy.node for v in views for copy in v.copies if copy.move]
        if marked:
            source = marked[0]
        else:
            view = primary_view(name, views, failed)
            assert view.primary is not None
            source = view.primary
            if source == target:
                raise ZflockError(
                    f"{name} is already on {target} (its primary, epoch {view.epoch}); "
                    "nothing to move"
                )
        async with c.client(source) as client:
            report: m.MoveReport = await client.call("move", args, on_event=display)
            return report

    progress = None if json_out else progress_bars()
    with progress or contextlib.nullcontext():
        report = run(go(MoveDisplay(name, progress, None if json_out else err_console)))
    hook_failed = any("hook" in w for w in report.warnings)
    if json_out:
        print_json(report_json(report))
    else:
        for warning in report.warnings:
            print_warning(f"{name}: {warning}")
        _print_summary(report)
    if hook_failed and report.result == "moved":
        sys.exit(1)


def _print_summary(r: m.MoveReport) -> None:
    if r.result == "planned":
        console.print(
            f"plan for moving {r.volume} {r.source} -> {r.destination}:",
            markup=False,
            soft_wrap=True,
        )
        for line in r.plan:
            console.print(f"  {line}", markup=False, soft_wrap=True)
        console.print("(dry run: nothing changed)", markup=False)
        return
    if r.result == "completed":
        console.print(
            f"finished the interrupted move of {r.volume} to {r.destination} "
            f"(epoch {r.epoch}): {r.reason}",
            markup=False,
            soft_wrap=True,
        )
        return
    err_console.print(f"pre-copy stopped: {r.reason}", markup=False, soft_wrap=True)
    console.print(
        f"moved {r.volume} {r.source} -> {r.destination} in {r.total_s:.1f} s, "
        f"downtime {r.downtime_s:.2f} s (epoch {r.epoch}, {len(r.rounds)} round(s), "
        f"{format_bytes(r.bytes)})",
        markup=False,
        soft_wrap=True,
    )
