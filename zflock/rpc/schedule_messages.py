"""The `schedules` operation: what a primary's replication scheduler is doing.

Kept apart from messages.py (which is near its size limit); OPERATIONS
there lists the operation. Times are unix seconds, durations seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# How a link's last run ended: "never" until its first run finishes. (On the
# wire a str: the codec decodes no Literal.)
LastResult = Literal["never", "ok", "failed"]


@dataclass(frozen=True)
class ScheduleInfo:
    """One (volume, target) link of a continuous policy, on the volume's primary."""

    volume: str
    node: str  # the primary, which runs the schedule
    target: str
    every: float
    next_run: float | None  # None while a run is going
    running: bool
    failures: int  # failed runs in a row (0 after a success): the backoff's exponent
    last_result: str  # a LastResult
    last_error: str | None
    last_success: float | None  # when the last successful run finished
    last_job: str | None = None  # the job id of the last run (`zflock status`)
    last_bytes: int = 0  # what the last successful run sent
    last_kind: str | None = None  # its first step's kind: "full", "incremental" (None: up to date)


@dataclass(frozen=True)
class ScheduleList:
    node: str
    links: list[ScheduleInfo] = field(default_factory=list)
    max_streams: int = 0  # the node's limit on concurrent scheduled streams
    # How late the node's latest scheduled runs started, oldest first (at most
    # schedule.LATENESS_KEPT of them), and how many runs were ever started: a
    # reader polling it takes exactly the new values (schedule.lateness_since).
    lateness: list[float] = field(default_factory=list)
    runs_started: int = 0
    runs_failed: int = 0  # of those, how many ended in failure
