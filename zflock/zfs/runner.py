"""Run `zfs`/`zpool` as asyncio subprocesses, optionally behind a prefix.

The prefix puts the command where the node's ZFS lives: `nsenter --mount=...
--` for a lab node's private zfs-fuse, nothing on a real host. nsenter execs
the command (no fork for a mount namespace), so the PID we hold is the PID of
`zfs` itself and killing it leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zflock.zfs.errors import classify_error


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


def close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close our ends of the process's pipes (and kill it if it still runs).

    Needed twice over: asyncio's Process.wait() returns only once every pipe
    is closed, and zfs-fuse's daemon -- not the `zfs` client -- holds the
    write end of a send stream's stdout, so a killed `zfs send` keeps it open
    until we close ours (the daemon then stops on EPIPE). There is no public
    API to close a subprocess's read pipes; the transport's close() does it.
    """
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


async def kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """Kill this process (by its PID) if it still runs, close its pipes, wait for it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    close_transport(proc)
    # Shielded: a cancelled caller must still not leave a zombie behind.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(proc.wait())


@dataclass(frozen=True)
class Runner:
    prefix: tuple[str, ...] = ()  # e.g. daemon.nsenter_prefix(); () when already on the node

    def full_argv(self, argv: Sequence[str]) -> list[str]:
        return [*self.prefix, *argv]

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        """Run to completion; on failure (with check) raise the typed error from stderr."""
        proc = await asyncio.create_subprocess_exec(
            *self.full_argv(argv),
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await proc.communicate(input)
        except BaseException:
            await kill_and_reap(proc)
            raise
        assert proc.returncode is not None
        done = Completed(tuple(argv), proc.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise classify_error(argv, done.returncode, done.stderr_text)
        return done

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        limit: int = 1 << 20,
    ) -> asyncio.subprocess.Process:
        """Start a long-running command (a send or receive stream); the caller reaps it.

        `limit` bounds the StreamReader buffer: the pipe is paused beyond it, so
        memory stays flat however fast the producer is.
        """
        return await asyncio.create_subprocess_exec(
            *self.full_argv(argv), stdin=stdin, stdout=stdout, stderr=stderr, limit=limit
        )
