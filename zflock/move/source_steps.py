"""Acting on a move on its source: an interrupted one found there (recover_move), and the
steps the driver (driver.py) shares with that: rollback hooks, and a demotion or a stale
label retried while a consumer still holds the mount.

What to do is decided by zflock.move.recovery.recover (pure); this module does it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from zflock.cluster.ownership import Stale, StaleReason
from zflock.errors import ZflockError
from zflock.move.endpoint import DestinationSide, SourceSide
from zflock.move.marker import Marker
from zflock.move.recovery import (
    ASK_DESTINATION,
    COMPLETE,
    RETIRE,
    ROLL_BACK,
    STALE,
    UNREACHABLE,
    WAIT,
    Heard,
    Recovery,
    recover,
)

log = logging.getLogger("zflock.move")

# How long the job keeps retrying the source's demotion before leaving it to
# recovery. (How long it asks an unreachable destination whether it promoted
# is spec.deadlines.settle.)
DEMOTE_SECONDS = 30.0


async def run_rollback_hooks(source: SourceSide, volume: str) -> str | None:
    """Restart the consumer on the source; what failed, if anything (logged, never raised:
    the source is serving again either way)."""
    try:
        await source.run_hooks("rollback")
    except ZflockError as exc:
        log.error("rollback hook failed: %s", exc, extra={"volume": volume})
        return f"rollback hook failed: {exc}"
    return None


async def _retry_while_busy(step: Callable[[], Awaitable[None]]) -> None:
    """Run a step that ends with an unmount, retrying what a consumer still holding the
    mount makes fail (for DEMOTE_SECONDS; the copy is read-only all along)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(ZflockError),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(DEMOTE_SECONDS),
        reraise=True,
    ):
        with attempt:
            await step()


async def demote_source(source: SourceSide, *, destroy: bool) -> None:
    """Demote, retrying a busy unmount."""
    await _retry_while_busy(lambda: source.demote(destroy=destroy))


async def recover_move(
    volume: str,
    marker: Marker,
    role: str,
    epoch: int,
    source: SourceSide,
    destination: DestinationSide | None,
    peers: Callable[[], Awaitable[int]] | None = None,
) -> Recovery:
    """Finish, undo, retire or leave stale an interrupted move found on the source
    (zflock.move.recovery.recover decides). Returns what was done.

    `role` and `epoch` are the source copy's own. `destination` None means it cannot
    be reached (no connection). `peers` returns the highest epoch of this volume the
    other reachable nodes report (0: none): asked before the source is unfenced and
    while the destination cannot answer, so that no copy is made writable below an
    epoch some node holds, and a source whose destination is gone can still learn
    that it lost.
    """
    decision = recover(marker, role, epoch)
    answer: Heard | None = None
    seen = 0
    if decision.action == ASK_DESTINATION:
        answer = UNREACHABLE
        if destination is not None:
            try:
                resolution = await destination.resolve(marker.move_id)
                answer, seen = resolution.answer, resolution.epoch
            except ZflockError as exc:
                log.warning("cannot settle move %s with %s yet: %s", marker.move_id,
                            marker.destination, exc)  # fmt: skip
                answer = UNREACHABLE
        decision = recover(marker, role, epoch, answer, seen)
    if decision.action in (ROLL_BACK, WAIT) and peers is not None:
        seen = max(seen, await peers())
        decision = recover(marker, role, epoch, answer, seen)
    if decision.action == ROLL_BACK:
        await source.unfence()
        await run_rollback_hooks(source, volume)
    elif decision.action == COMPLETE:
        await demote_source(source, destroy=False)
    elif decision.action == STALE:
        reason: StaleReason = "superseded" if decision.superseded else "higher-epoch"
        await stale_source(source, Stale(decision.lost_to, reason, marker.move_id))
    elif decision.action == RETIRE:
        await source.clear_marker("older than the copy's epoch (that move is over)")
    else:
        assert decision.action == WAIT
    return decision


async def stale_source(source: SourceSide, stale: Stale) -> None:
    """Leave the source fenced for good as a stale copy, retrying a busy unmount."""
    await _retry_while_busy(lambda: source.mark_stale(stale))
