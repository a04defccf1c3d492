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


async def test_the_table_forgets_every_volume_nobody_holds_or_waits_for() -> None:
    """A client naming thousands of volumes must not grow the agent's memory for good."""
    locks = VolumeLocks()
    for i in range(5000):
        async with locks.hold(f"vol{i}", "snapshot", wait=False):
            assert len(locks) == 1
    assert len(locks) == 0

    # Held, waited for, refused and cancelled in every mix: empty once all are done.
    release = asyncio.Event()

    async def hold(name: str) -> None:
        async with locks.hold(name, "hold", wait=True):
            await release.wait()

    holders = [asyncio.create_task(hold(f"busy{i % 50}")) for i in range(200)]
    await asyncio.sleep(0.01)
    assert len(locks) == 50  # one entry per name, however many wait for it
    with pytest.raises(VolumeBusy):
        await locks.acquire("busy0", "refused", wait=False)
    for task in holders[150:]:  # some waiters give up (a client went away)
        task.cancel()
    release.set()
    results = await asyncio.gather(*holders, return_exceptions=True)
    assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)
    assert len(locks) == 0 and locks.holder("busy0") is None


async def test_a_waiter_keeps_the_entry_while_the_holder_leaves() -> None:
    """Dropping an entry that someone still waits on would let two operations in at once."""
    locks = VolumeLocks()
    inside = 0
    most = 0

    async def op() -> None:
        nonlocal inside, most
        async with locks.hold("web", "op", wait=True):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(op() for _ in range(100)))
    assert most == 1 and len(locks) == 0


async def test_a_bounded_wait_gets_the_lock_or_says_busy_and_leaves_no_entry() -> None:
    """A failover waits (bounded) for the old primary's cut stream to give the lock up."""
    locks = VolumeLocks()
    await locks.acquire("web", "receive", wait=False)
    with pytest.raises(VolumeBusy, match="busy with another operation \\(receive\\)"):
        await locks.acquire("web", "failover", wait=True, within=0.05)
    assert locks.holder("web") == "receive"  # still the receive's, and no waiter left
    assert len(locks) == 1

    async def release_soon() -> None:
        await asyncio.sleep(0.02)
        locks.release("web")

    releasing = asyncio.create_task(release_soon())
    async with locks.hold("web", "failover", wait=True, within=10):
        assert locks.holder("web") == "failover"
    await releasing
    assert len(locks) == 0
