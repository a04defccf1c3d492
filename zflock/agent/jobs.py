"""Long operations run as jobs inside the agent, not inside the CLI.

A job is an asyncio task owned by the agent. The request that started it
follows its progress events; if that client goes away, the job goes on, and
`zflock status` (the `jobs` operation) shows it. Finished jobs are kept for
a while so a client that reconnects can see how it ended.

A job observes its operation's typed events (it is an `Observer`): they set the
step `zflock status` shows and go to the clients following it, converted to the
wire at that edge (zflock.rpc.progress).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from zflock.events import (
    NO_OBSERVER,
    CutoverStep,
    Event,
    JobEnded,
    JobStarted,
    Observer,
    PrecopyRound,
    StreamProgressed,
    move_phase_after,
)
from zflock.rpc.messages import JobInfo
from zflock.rpc.progress import event_to_wire

log = logging.getLogger("zflock.agent.jobs")
KEEP_FINISHED = 50


@dataclass
class Job:
    kind: str
    volume: str
    node: str
    target: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.time)
    state: str = "running"
    bytes: int = 0
    total: int | None = None
    rate: float = 0.0
    step: str = "starting"
    error: str | None = None
    result: Any = None
    task: asyncio.Task[Any] | None = None
    _listeners: set[asyncio.Queue[Event | None]] = field(default_factory=set)

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id, kind=self.kind, volume=self.volume, node=self.node, target=self.target,
            state=self.state, started=self.started, bytes=self.bytes, total=self.total,
            rate=self.rate, step=self.step, error=self.error,
        )  # fmt: skip

    def emit(self, event: Event) -> None:
        """Observe the operation: progress and phase go to `step`, every event to followers."""
        if isinstance(event, StreamProgressed):
            self.step, self.bytes, self.total, self.rate = (
                event.step, event.bytes, event.total, event.rate
            )  # fmt: skip
        elif isinstance(event, PrecopyRound | CutoverStep):
            self.step = move_phase_after(event)
        for queue in self._listeners:
            # Listeners that fall behind lose progress events, never the end.
            if queue.qsize() < 100:
                queue.put_nowait(event)

    def listen(self) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Event | None]) -> None:
        self._listeners.discard(queue)


class Jobs:
    def __init__(self, observer: Observer = NO_OBSERVER) -> None:
        self.observer = observer
        self._running: dict[str, Job] = {}
        self._finished: deque[Job] = deque(maxlen=KEEP_FINISHED)

    def all(self) -> list[Job]:
        return [*self._running.values(), *self._finished]

    def running(self) -> list[Job]:
        return list(self._running.values())

    def tasks(self) -> list[asyncio.Task[Any]]:
        return [j.task for j in self._running.values() if j.task is not None]

    def start(self, job: Job, run: Callable[[Job], Awaitable[Any]]) -> Job:
        async def body() -> Any:
            try:
                job.result = await run(job)
                job.state = "done"
                return job.result
            except asyncio.CancelledError:
                job.state, job.error = "failed", "cancelled (agent stopping)"
                raise
            except Exception as exc:
                job.state, job.error = "failed", str(exc)
                raise
            finally:
                self._running.pop(job.id, None)
                self._finished.appendleft(job)
                self.observer.emit(JobEnded(job.kind, job.state))
                for queue in list(job._listeners):
                    queue.put_nowait(None)  # end of events
                log.info("job %s %s: %s", job.id, job.kind, job.state,
                         extra={"volume": job.volume, "job": job.id})  # fmt: skip

        self._running[job.id] = job
        self.observer.emit(JobStarted(job.kind))
        job.task = asyncio.get_running_loop().create_task(body())
        # The starter may be gone by the time the job fails; its error is kept
        # on the job, so the task's exception is consumed here.
        job.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return job

    async def follow(self, job: Job, send: Callable[[dict[str, Any]], Awaitable[None]]) -> Any:
        """Forward the job's events until it ends; return its result or raise its error.

        If sending fails (the client disconnected) the job continues alone.
        """
        queue = job.listen()
        try:
            while (event := await queue.get()) is not None:
                if (wire := event_to_wire(event, job.id)) is None:
                    continue
                try:
                    await send(wire)
                except Exception:
                    log.info("client stopped following job %s; it continues", job.id)
                    raise
        finally:
            job.unlisten(queue)
        assert job.task is not None
        return await asyncio.shield(job.task)
