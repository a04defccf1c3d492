"""Per-volume locks: a second operation waits or fails at once, by its flag."""

from __future__ import annotations

import asyncio

import pytest

from zflock.agent.locks import VolumeBusy, VolumeLocks


async def test_second_operation_fails_without_wait() -> None:
    locks = VolumeLocks()
    async with locks.hold("web", "destroy", wait=False):
        assert locks.holder("web") == "destroy"
        with pytest.raises(VolumeBusy, match="busy with another operation \\(destroy\\)"):
            async with locks.hold("web", "snapshot", wait=False):
                pass
        async with locks.hold("db", "snapshot", wait=False):  # other volumes are free
            pass
    assert locks.holder("web") is None


async def test_second_operation_waits_its_turn() -> None:
    locks = VolumeLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("web", "first", wait=True):
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def second() -> None:
        async with locks.hold("web", "second", wait=True):
            order.append("second in")

    t1 = asyncio.create_task(first())
    await asyncio.sleep(0)
    t2 = asyncio.create_task(second())
    await asyncio.sleep(0.01)
    assert order == ["first in"]
    release.set()
    await asyncio.gather(t1, t2)
    assert order == ["first in", "first out", "second in"]
