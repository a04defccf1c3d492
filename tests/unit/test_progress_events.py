"""Typed progress events: the move driver labels them, a job observes them, and they
cross the RPC edge as the dicts the CLI has always read (zflock/rpc/progress.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.jobs import Job, Jobs
from zflock.events import (
    CutoverStep,
    Event,
    JobStarted,
    PrecopyRound,
    StreamProgressed,
    move_phase_after,
)
from zflock.move.driver import Move, MoveSpec
from zflock.move.marker import new_move_id
from zflock.rpc.progress import event_from_wire, event_to_wire

text = st.text(max_size=20)
finite = st.floats(min_value=0, max_value=1e9, allow_nan=False)
progress = st.builds(StreamProgressed, text, text, st.integers(0, 1 << 60),
                     st.none() | st.integers(0, 1 << 60), finite)  # fmt: skip
rounds = st.builds(PrecopyRound, text, st.integers(1, 100), text, st.integers(0, 1 << 60),
                   finite, st.sampled_from(["continue", "cutover", "abort"]), text)  # fmt: skip
steps = st.builds(CutoverStep, text, text, finite)


@given(st.one_of(progress, rounds, steps))
def test_progress_events_survive_the_wire(
    event: StreamProgressed | PrecopyRound | CutoverStep,
) -> None:
    wire = event_to_wire(event, "job1")
    assert wire is not None
    assert event_from_wire(wire, event.volume) == event


def test_the_wire_keeps_the_keys_the_cli_reads() -> None:
    assert event_to_wire(StreamProgressed("v", "full @s", 10, None, 2.0), "j") == {
        "kind": "progress", "job": "j", "step": "full @s", "bytes": 10, "total": None, "rate": 2.0,
    }  # fmt: skip
    assert event_to_wire(PrecopyRound("v", 2, "incremental", 5, 0.5, "cutover", "fits"), "j") == {
        "kind": "round", "round": 2, "type": "incremental", "bytes": 5, "seconds": 0.5,
        "decision": "cutover", "reason": "fits",
    }  # fmt: skip
    assert event_to_wire(CutoverStep("v", "fence", 0.25), "j") == {
        "kind": "cutover", "step": "fence", "seconds": 0.25,
    }  # fmt: skip


def test_other_events_stay_in_the_agent_and_unknown_kinds_are_ignored() -> None:
    assert event_to_wire(JobStarted("move"), "j") is None
    assert event_from_wire({"kind": "something new"}, "v") is None
    assert event_from_wire({}, "v") is None


def test_a_move_phase_follows_its_rounds_and_cutover() -> None:
    assert move_phase_after(PrecopyRound("v", 1, "full", 1, 1.0, "continue", "")) == (
        "pre-copy round 2"
    )
    assert move_phase_after(CutoverStep("v", "fence", 0.1)) == "cutover"


class Seen:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def test_the_move_driver_labels_its_streams_with_the_phase() -> None:
    seen = Seen()
    spec = MoveSpec(volume="v", volume_id="id", source="a", destination="b", epoch=1,
                    move_id=new_move_id())  # fmt: skip
    nothing = cast(Any, None)  # emit() touches neither side nor the replication
    move = Move(spec, nothing, nothing, nothing, seen)
    move.emit(StreamProgressed("v", "full @s1", 1, None, 0.0))
    move.emit(PrecopyRound("v", 1, "full", 1, 1.0, "continue", "more"))
    move.emit(StreamProgressed("v", "incremental @s2", 2, None, 0.0))
    move.emit(CutoverStep("v", "fence", 0.1))
    move.emit(StreamProgressed("v", "incremental @s3", 3, None, 0.0))
    labels = [e.step for e in seen.events if isinstance(e, StreamProgressed)]
    assert labels == [
        "pre-copy round 1: full @s1",
        "pre-copy round 2: incremental @s2",
        "cutover: incremental @s3",
    ]


def test_a_job_shows_its_events_and_sends_them_on_the_wire() -> None:
    async def scenario() -> tuple[Job, list[dict[str, Any]]]:
        sent: list[dict[str, Any]] = []
        job = Job(kind="move", volume="v", node="a", target="b")

        async def body(job: Job) -> str:
            await asyncio.sleep(0)  # the follower listens first
            job.emit(StreamProgressed("v", "pre-copy round 1: full @s", 7, 9, 3.0))
            assert (job.step, job.bytes, job.total, job.rate) == (
                "pre-copy round 1: full @s", 7, 9, 3.0,
            )  # fmt: skip
            job.emit(PrecopyRound("v", 1, "full", 7, 1.0, "cutover", "fits"))
            assert job.step == "pre-copy round 2"
            job.emit(JobStarted("move"))  # not for the wire
            job.emit(CutoverStep("v", "fence", 0.1))
            assert job.step == "cutover"
            return "done"

        async def send(event: dict[str, Any]) -> None:
            sent.append(event)

        jobs = Jobs()
        jobs.start(job, body)
        assert await jobs.follow(job, send) == "done"
        return job, sent

    job, sent = asyncio.run(scenario())
    assert [e["kind"] for e in sent] == ["progress", "round", "cutover"]
    assert sent[0]["job"] == job.id
