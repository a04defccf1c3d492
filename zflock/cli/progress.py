"""The CLI's progress display: the agent's progress events as bars on a terminal.

Events arrive as wire dicts (zflock.rpc.progress converts them back to the typed
events of zflock.events); one bar per replication step.
"""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from zflock.cli.common import err_console
from zflock.events import StreamProgressed
from zflock.rpc.progress import event_from_wire


class StepBars:
    """One progress bar per step, fed by the agent's progress events."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, wire: dict[str, Any]) -> None:
        event = event_from_wire(wire, "")
        if isinstance(event, StreamProgressed):
            self.show(event)

    def show(self, event: StreamProgressed) -> None:
        if self.progress is None:
            return
        step, done, total = event.step, event.bytes, event.total
        if step not in self.tasks:
            self.tasks[step] = self.progress.add_task(step, total=total)
        # An estimate can be short (zfs-fuse has none): grow it rather than overflow.
        if total is not None:
            total = max(total, done)
        self.progress.update(self.tasks[step], completed=done, total=total)


def progress_bars() -> Progress | None:
    """Bars on stderr when it is a terminal; None (no bars) otherwise."""
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
