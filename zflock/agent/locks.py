"""One operation at a time per volume.

The agent is the only writer of its node's ZFS state, so serialising per
volume here is enough to make "snapshot while destroying" impossible. A
request either waits for the running operation or fails at once, by its
`wait` flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from zflock.errors import ZflockError


class VolumeBusy(ZflockError):
    def __init__(self, volume: str, holder: str) -> None:
        super().__init__(
            f"volume {volume} is busy with another operation ({holder}); retry when it has finished"
        )
        self.volume = volume


class VolumeLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, str] = {}

    def holder(self, volume: str) -> str | None:
        return self._holders.get(volume)

    async def acquire(self, volume: str, operation: str, *, wait: bool) -> None:
        """Take the volume's lock for a job that outlives the request (release() when done)."""
        lock = self._locks.setdefault(volume, asyncio.Lock())
        if lock.locked() and not wait:
            raise VolumeBusy(volume, self._holders.get(volume, "unknown"))
        await lock.acquire()
        self._holders[volume] = operation

    def release(self, volume: str) -> None:
        self._holders.pop(volume, None)
        self._locks[volume].release()

    @asynccontextmanager
    async def hold(self, volume: str, operation: str, *, wait: bool) -> AsyncIterator[None]:
        await self.acquire(volume, operation, wait=wait)
        try:
            yield
        finally:
            self.release(volume)
