"""The order the move driver keeps while it writes the move marker beside other work
(zflock.move.driver.Move._beside; docs/move.md, the cutover's steps).

Recovery relies on two orders whatever the timing: the `fenced` marker is on the
source before `readonly=on`, and the `promoting` marker before the promote request
goes out (a crash before it is settled as "the destination cannot have promoted").
Here the marker writes are made the slowest step on purpose, so a driver that let
either step start before its marker landed fails. The endpoints record what they are
asked; they stand for the two sides' interfaces (move/endpoint.py), above ZFS, which
tests/move runs for real.
"""

from __future__ import annotations

import asyncio

import pytest

from zflock.errors import ZflockError
from zflock.move.driver import Move, MoveFailed, MoveSpec
from zflock.move.endpoint import PromoteRequest, Promotion, SnapTaken
from zflock.move.marker import Marker, new_move_id
from zflock.replication.driver import Outcome
from zflock.replication.endpoint import ReceiveResult

GUID = 42
SLOW_MARKER = 0.05  # seconds: longer than every other step here


class Source:
    def __init__(self, log: list[str], hook_fails: bool = False) -> None:
        self.log = log
        self.hook_fails = hook_fails

    async def snapshot(self) -> SnapTaken:
        self.log.append("snapshot")
        return SnapTaken("final", GUID)

    async def prepare_fence(self) -> None:
        self.log.append("prepare fence")

    async def fence(self) -> None:
        self.log.append("fence")

    async def set_marker(self, marker: Marker) -> None:
        self.log.append(f"marker {marker.phase} begins")
        await asyncio.sleep(SLOW_MARKER)
        self.log.append(f"marker {marker.phase} landed")

    async def clear_marker(self, why: str) -> None:
        self.log.append("clear marker")

    async def unfence(self) -> None:
        self.log.append("unfence")

    async def demote(self, *, destroy: bool) -> None:
        self.log.append("demote")

    async def mark_stale(self, stale: object) -> None:
        raise AssertionError("not in these tests")

    async def run_hooks(self, kind: str) -> None:
        self.log.append(f"hooks {kind}")
        if kind == "pre_cutover" and self.hook_fails:
            raise ZflockError("pre_cutover hook exited 3")


class Destination:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def state(self) -> object:
        raise AssertionError("the receive reported the final snapshot's guid")

    async def promote(self, request: PromoteRequest) -> Promotion:
        self.log.append("promote request")
        return Promotion(node="b", epoch=request.epoch, snapshot="final", mountpoint="/m",
                         seconds=0.0)  # fmt: skip

    async def resolve(self, move_id: str) -> object:
        raise AssertionError("nothing to settle")


def move(log: list[str], *, hook_fails: bool = False) -> Move:
    async def replicate_once(observer: object) -> Outcome:
        log.append("final delta")
        return Outcome(newest=ReceiveResult("final", GUID, 0))

    spec = MoveSpec(volume="v", volume_id="id", source="a", destination="b", epoch=1,
                    move_id=new_move_id())  # fmt: skip
    return Move(spec, Source(log, hook_fails), Destination(log), replicate_once)  # type: ignore[arg-type]


def test_each_marker_lands_before_the_step_that_needs_it() -> None:
    log: list[str] = []
    asyncio.run(move(log).cutover())
    assert log.index("marker fenced landed") < log.index("fence")
    assert log.index("marker promoting landed") < log.index("promote request")


def test_a_failing_hook_waits_for_the_marker_then_clears_it() -> None:
    log: list[str] = []
    with pytest.raises(MoveFailed, match="nothing was fenced"):
        asyncio.run(move(log, hook_fails=True).cutover())
    # The clear comes after the write it undoes, never overtaken by it; no fence.
    assert log.index("marker fenced landed") < log.index("clear marker")
    assert "fence" not in log and "unfence" not in log
    assert log[-1] == "hooks rollback"
