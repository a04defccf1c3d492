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
OUTPUT_KEEP = 2000


class HookFailed(ZflockError):
    pass


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


async def run_hook(
    kind: str, argv: Sequence[str], context: Mapping[str, str], limit: float
) -> None:
    """Run one hook; HookFailed (one line) if it cannot start, fails, or times out."""
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
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its PID
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise HookFailed(f"{kind} hook `{shown}` timed out after {limit:g} s") from None
    text = out.decode(errors="replace").strip()[-OUTPUT_KEEP:]
    if proc.returncode != 0:
        last = text.splitlines()[-1] if text else "no output"
        raise HookFailed(f"{kind} hook `{shown}` exited {proc.returncode}: {last}")
    log.info("%s hook `%s` ok%s", kind, shown, f": {text}" if text else "",
             extra={"volume": context.get("volume")})  # fmt: skip


async def run_hooks(
    kind: str, commands: Sequence[Sequence[str]], context: Mapping[str, str], limit: float
) -> None:
    """Run hooks in order; the first failure stops the rest."""
    for argv in commands:
        await run_hook(kind, argv, context, limit)
