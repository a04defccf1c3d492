"""Hooks run as real processes: argv only, environment, exit status, timeout."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path

import pytest

from zflock.agent.hooks import OUTPUT_TAIL, HookFailed, run_hook, run_hooks, validate_hook
from zflock.errors import UsageError


def exists(path: str) -> bool:
    return Path(path).exists()


def read(path: Path) -> str:
    return path.read_text()


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return "gone"


CONTEXT = {"volume": "web", "mountpoint": "/zflock/web", "source": "node1",
           "destination": "node2", "epoch": "4"}  # fmt: skip


async def test_hook_gets_its_environment_and_no_shell(tmp_path: Path) -> None:
    out = tmp_path / "env"
    # `$(...)` and `;` are plain characters in an argv: no shell ever sees them.
    await run_hook(
        "pre_cutover",
        ["sh", "-c", 'env | grep ^ZFLOCK_ | sort > "$0"', str(out), "$(touch x); y"],
        CONTEXT,
        10,
    )
    env = dict(line.split("=", 1) for line in read(out).splitlines())
    assert env == {
        "ZFLOCK_HOOK": "pre_cutover",
        "ZFLOCK_VOLUME": "web",
        "ZFLOCK_MOUNTPOINT": "/zflock/web",
        "ZFLOCK_SOURCE": "node1",
        "ZFLOCK_DESTINATION": "node2",
        "ZFLOCK_EPOCH": "4",
    }
    assert not exists("x")


async def test_failure_names_the_hook_and_its_last_line() -> None:
    with pytest.raises(HookFailed) as e:
        await run_hook("pre_cutover", ["sh", "-c", "echo one; echo two >&2; exit 5"], CONTEXT, 10)
    assert str(e.value) == "pre_cutover hook `sh -c echo one; echo two >&2; exit 5` exited 5: two"


async def test_missing_program_fails_cleanly() -> None:
    with pytest.raises(HookFailed, match="could not start"):
        await run_hook("rollback", ["/nonexistent/zflock-hook"], CONTEXT, 10)


async def test_timeout_kills_the_hook_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    with pytest.raises(HookFailed, match=r"timed out after 0\.5 s"):
        await run_hook("post_cutover", ["sh", "-c", script], CONTEXT, 0.5)
    # The child was in the hook's process group: killed with it (a zombie at most).
    # SIGKILL went to the whole group, but only the hook's own exit is awaited: on a
    # loaded machine the child may still be on its way out (state R) for a moment.
    child = int(read(pidfile))
    for _ in range(200):  # 10 s at most
        if process_state(child) in ("gone", "Z"):
            break
        await asyncio.sleep(0.05)
    assert process_state(child) in ("gone", "Z")


async def test_hooks_run_in_order_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    log = tmp_path / "log"
    hooks = [["sh", "-c", f"echo a >> {log}"], ["false"], ["sh", "-c", f"echo c >> {log}"]]
    with pytest.raises(HookFailed, match="`false` exited 1"):
        await run_hooks("pre_cutover", hooks, CONTEXT, 10)
    assert read(log) == "a\n"


@pytest.mark.parametrize("argv", [[], [""], ["a\0b"], ["ok", "x\0"], ["x"] * 300])
def test_invalid_hooks_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        validate_hook(argv)


def test_the_hook_environment_drops_inherited_zflock_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zflock.agent.hooks import hook_env

    monkeypatch.setenv("ZFLOCK_CLUSTER", "/etc/other.toml")
    env = hook_env("rollback", CONTEXT)
    assert "ZFLOCK_CLUSTER" not in env and env["ZFLOCK_HOOK"] == "rollback"
    assert env["PATH"] == os.environ["PATH"]


# 50 MiB of output without a newline, then two short lines: a chatty hook.
CHATTY = "head -c 52428800 /dev/zero | tr '\\0' x; echo; echo the end; exit {code}"


async def _peak_memory_of(hook: object) -> int:
    """Peak bytes Python allocated while awaiting `hook` (tracemalloc, not time)."""
    tracemalloc.start()
    try:
        await hook  # type: ignore[misc]
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


async def test_a_chatty_hook_finishes_and_only_its_tail_is_kept() -> None:
    kept: list[str] = []

    async def hook() -> None:
        kept.append(
            await run_hook("post_cutover", ["sh", "-c", CHATTY.format(code=0)], CONTEXT, 120)
        )

    peak = await _peak_memory_of(hook())
    [out] = kept
    assert len(out) == OUTPUT_TAIL and out.endswith("x\nthe end\n")
    # The whole output was drained (the hook exited) without holding it: 50 MiB
    # read, a few times the 64 KiB tail at most in memory at once.
    assert peak < 16 * OUTPUT_TAIL, peak


async def test_a_chatty_failing_hook_reports_its_tail() -> None:
    failure: list[HookFailed] = []

    async def hook() -> None:
        try:
            await run_hook("pre_cutover", ["sh", "-c", CHATTY.format(code=3)], CONTEXT, 120)
        except HookFailed as exc:
            failure.append(exc)

    peak = await _peak_memory_of(hook())
    [exc] = failure
    assert str(exc).endswith("exited 3: the end") and "\n" not in str(exc)  # one line
    assert len(exc.output) == OUTPUT_TAIL and exc.output.endswith("xxx\nthe end\n")
    assert peak < 16 * OUTPUT_TAIL, peak


async def test_a_hook_that_times_out_still_reports_what_it_printed() -> None:
    script = "echo started; echo working >&2; sleep 60"
    with pytest.raises(HookFailed, match=r"timed out after 1 s") as e:
        await run_hook("rollback", ["sh", "-c", script], CONTEXT, 1)
    assert e.value.output == "started\nworking\n"
