"""Run `zfs`/`zpool` as asyncio subprocesses, optionally behind a prefix.

The prefix puts the command where the node's ZFS lives: `nsenter --mount=...
--` for a lab node's private zfs-fuse, nothing on a real host. nsenter execs
the command (no fork for a mount namespace), so the PID we hold is the PID of
`zfs` itself and killing it leaves nothing behind.

Every command has a deadline, so a hung `zfs` (a wedged daemon, a pool that
stopped answering) cannot hold its caller -- a fenced move source, a volume
lock -- for ever: `run()` kills it by PID after `timeout` seconds and raises
ZfsTimeout. Streams last as long as their data, so they get an inactivity
deadline instead (`stall`: no byte moved for that long; streams.py applies it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zflock.zfs.errors import ZfsTimeout, classify_error

# Seconds one command may take. Generous: a healthy command takes milliseconds
# (zfs-fuse: a snapshot ~20 ms, LAB.md), a busy pool seconds; OpenZFS under
# qemu's software emulation is ten times slower. A move's fenced steps have
# their own, shorter deadlines (zflock.move.driver), which cancel the command
# (and so kill it) sooner.
DEFAULT_TIMEOUT = 120.0
# Seconds a send or receive stream may move no byte before it counts as hung.
DEFAULT_STALL = 60.0


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
    timeout: float | None = DEFAULT_TIMEOUT  # per run(); None: no deadline
    stall: float | None = DEFAULT_STALL  # per stream: seconds without a byte moved

    def full_argv(self, argv: Sequence[str]) -> list[str]:
        return [*self.prefix, *argv]

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        """Run to completion; on failure (with check) raise the typed error from stderr.

        Past `self.timeout` seconds the process is killed (by its PID) and reaped, and
        ZfsTimeout is raised. A caller's own deadline (a cancellation) kills it too.
        """
        proc = await asyncio.create_subprocess_exec(
            *self.full_argv(argv),
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await proc.communicate(input)
        except TimeoutError:
            await kill_and_reap(proc)
            raise ZfsTimeout(
                f"`{' '.join(argv)}` did not finish within {self.timeout:g} s; killed",
                argv=argv,
            ) from None
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
