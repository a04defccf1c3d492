"""One operation at a time per volume.

The agent is the only writer of its node's ZFS state, so serialising per
volume here is enough to make "snapshot while destroying" impossible. A
request either waits for the running operation or fails at once, by its
`wait` flag.

The table holds an entry only while someone holds or waits for a volume's
lock: names come from clients, and a client asking for a million different
names must not leave a million locks behind.

For the volumes someone `watch`es (agent/link_memory.py: what a scheduled
replication remembers between its runs), the locks also count how often each
was taken, and `changed()` counts an action taken without it (a self-fence
that could not wait): remembered state is good only while no one else took
the lock in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from zflock.errors import ZflockError


class VolumeBusy(ZflockError):
    def __init__(self, volume: str, holder: str) -> None:
        super().__init__(
            f"volume {volume} is busy with another operation ({holder}); retry when it has finished"
        )
        self.volume = volume


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting: the entry goes when this falls to 0
    holder: str | None = None


class VolumeLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._taken: dict[str, int] = {}  # watched volumes only: times taken or changed

    def watch(self, volume: str) -> int:
        """Count `volume`'s acquisitions from now on; the count so far."""
        return self._taken.setdefault(volume, 0)

    def unwatch(self, volume: str) -> None:
        self._taken.pop(volume, None)

    def taken(self, volume: str) -> int | None:
        """How often `volume`'s lock was taken (or `changed`) while watched; None if not."""
        return self._taken.get(volume)

    def changed(self, volume: str) -> None:
        """Something changed the volume without its lock: count it as taken."""
        if volume in self._taken:
            self._taken[volume] += 1

    def __len__(self) -> int:
        """Volumes with a holder or a waiter (the size of the table)."""
        return len(self._entries)

    def holder(self, volume: str) -> str | None:
        entry = self._entries.get(volume)
        return entry.holder if entry else None

    async def acquire(
        self, volume: str, operation: str, *, wait: bool, within: float | None = None
    ) -> None:
        """Take the volume's lock for a job that outlives the request (release() when done).
        With `wait`, for at most `within` seconds (None: as long as it takes), then
        VolumeBusy as without `wait`."""
        entry = self._entries.setdefault(volume, _Entry())
        if entry.lock.locked() and not wait:
            raise VolumeBusy(volume, entry.holder or "unknown")
        entry.users += 1
        holder = entry.holder
        try:
            async with asyncio.timeout(within):
                await entry.lock.acquire()
        except BaseException as exc:  # cancelled or out of time while waiting: no longer a user
            self._leave(volume, entry)
            if isinstance(exc, TimeoutError):
                raise VolumeBusy(volume, entry.holder or holder or "unknown") from None
            raise
        entry.holder = operation
        if volume in self._taken:
            self._taken[volume] += 1

    def release(self, volume: str) -> None:
        entry = self._entries[volume]
        entry.holder = None
        entry.lock.release()
        self._leave(volume, entry)

    def _leave(self, volume: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[volume]

    @asynccontextmanager
    async def hold(
        self, volume: str, operation: str, *, wait: bool, within: float | None = None
    ) -> AsyncIterator[None]:
        await self.acquire(volume, operation, wait=wait, within=within)
        try:
            yield
        finally:
            self.release(volume)
