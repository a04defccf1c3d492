"""Hooks: commands an operator asks zflock to run around a cutover (stop/start a container).

A hook is an argv list, executed directly (never through a shell), with a
timeout, and with what it needs to know in its environment:

    ZFLOCK_HOOK         pre_cutover | post_cutover | rollback
    ZFLOCK_VOLUME       the volume's name
    ZFLOCK_MOUNTPOINT   where the volume is (or will be) mounted
    ZFLOCK_SOURCE       the node the volume moves from
    ZFLOCK_DESTINATION  the node it moves to
    ZFLOCK_EPOCH        the epoch the destination gets

A hook that exits non-zero or outlives its timeout fails; its process group
is killed by the PID we started (hooks run in a session of their own, so
their children go too, unless they deliberately detach).

Its output (stdout and stderr together) is read as it comes and only the
tail is kept: a hook that prints without end can neither block on a full
pipe nor fill the agent's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence

from zflock.errors import UsageError, ZflockError

log = logging.getLogger("zflock.agent.hooks")
MAX_ARGS = 256
# What the agent logs of a hook's output, and the longest line an error shows.
OUTPUT_KEEP = 2000
# The tail of a hook's output kept in memory: enough for the last screens of
# a failing `docker stop` or a Python traceback, the part that explains a
# failure, while a hook printing gigabytes costs the agent 64 KiB, not
# gigabytes (hooks run while a volume is fenced: the agent must stay healthy).
OUTPUT_TAIL = 64 << 10
READ_SIZE = 64 << 10


class HookFailed(ZflockError):
    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output  # the tail of the hook's output (at most OUTPUT_TAIL bytes)


def validate_hook(argv: Sequence[str], what: str = "hook") -> list[str]:
    """An argv list fit to exec: non-empty, strings, no NUL bytes."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError(f"{what}: expected a non-empty command (a list of arguments)")
    if len(argv) > MAX_ARGS:
        raise UsageError(f"{what}: more than {MAX_ARGS} arguments")
    if not argv[0] or any("\0" in a for a in argv):
        raise UsageError(f"{what}: empty program name or a NUL byte in an argument")
    return list(argv)


def hook_env(kind: str, context: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLOCK_")}
    env["ZFLOCK_HOOK"] = kind
    env.update({f"ZFLOCK_{k.upper()}": v for k, v in context.items()})
    return env


async def read_tail(stream: asyncio.StreamReader, tail: bytearray, keep: int = OUTPUT_TAIL) -> None:
    """Read `stream` to its end, keeping only its last `keep` bytes in `tail`
    (a caller's buffer, so that a hook cut short still shows what it printed)."""
    while chunk := await stream.read(READ_SIZE):
        tail += chunk
        if len(tail) > keep:
            del tail[:-keep]


def last_line(text: str) -> str:
    """The output's last non-empty line, for a one-line error (its end if very long)."""
    lines = text.strip().splitlines()
    return lines[-1][-OUTPUT_KEEP:] if lines else "no output"


async def run_hook(kind: str, argv: Sequence[str], context: Mapping[str, str], limit: float) -> str:
    """Run one hook and return the tail of its output.

    HookFailed (one line, the output's tail in `output`) if it cannot start,
    fails, or times out.
    """
    argv = validate_hook(argv, f"{kind} hook")
    shown = " ".join(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=hook_env(kind, context),
            start_new_session=True,
        )
    except OSError as exc:
        raise HookFailed(f"{kind} hook `{shown}` could not start: {exc.strerror}") from None
    assert proc.stdout is not None
    tail = bytearray()
    reading = asyncio.ensure_future(read_tail(proc.stdout, tail))
    try:
        # Drain while waiting: a hook blocked on a full pipe would never exit.
        await asyncio.wait_for(asyncio.gather(reading, proc.wait()), limit)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its PID
        await proc.wait()
        reading.cancel()  # gather cancelled it already; a detached child may hold the pipe
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise HookFailed(
            f"{kind} hook `{shown}` timed out after {limit:g} s", tail.decode(errors="replace")
        ) from None
    text = tail.decode(errors="replace")
    if proc.returncode != 0:
        log.warning("%s hook `%s` exited %d; its output ends: %s", kind, shown,
                    proc.returncode, text.strip()[-OUTPUT_KEEP:] or "(none)",
                    extra={"volume": context.get("volume")})  # fmt: skip
        raise HookFailed(f"{kind} hook `{shown}` exited {proc.returncode}: {last_line(text)}", text)
    shown_output = text.strip()[-OUTPUT_KEEP:]
    log.info("%s hook `%s` ok%s", kind, shown, f": {shown_output}" if shown_output else "",
             extra={"volume": context.get("volume")})  # fmt: skip
    return text


async def run_hooks(
    kind: str, commands: Sequence[Sequence[str]], context: Mapping[str, str], limit: float
) -> None:
    """Run hooks in order; the first failure stops the rest."""
    for argv in commands:
        await run_hook(kind, argv, context, limit)
