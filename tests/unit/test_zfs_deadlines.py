"""The zfs layer's deadlines, against real processes: a command that hangs is killed by
its PID and reported as ZfsTimeout; a stream that stops moving bytes too.

Runner is the unit here, so a `sleep` child stands in for a hung `zfs` (above
the zfs layer nothing may fake it). Each stand-in writes its PID to a file
first (`exec` keeps it), so the test checks that exact process is gone.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from zflock.zfs import ZfsError, ZfsTimeout
from zflock.zfs.runner import DEFAULT_STALL, DEFAULT_TIMEOUT, Runner
from zflock.zfs.streams import ReceiveStream, SendStream

QUICK = Runner(timeout=0.5, stall=0.5)


def hung(pidfile: Path, before: str = "") -> list[str]:
    """sh that records its PID, optionally does `before`, then hangs as that same PID."""
    return ["sh", "-c", f'echo $$ > "$0"; {before} exec sleep 600', str(pidfile)]


def gone(pidfile: Path) -> bool:
    """The process is dead and reaped (a zombie would still answer signal 0)."""
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_defaults_are_bounded() -> None:
    runner = Runner()
    assert runner.timeout == DEFAULT_TIMEOUT and 0 < DEFAULT_TIMEOUT <= 600
    assert runner.stall == DEFAULT_STALL and 0 < DEFAULT_STALL <= 600


async def test_run_kills_a_command_past_its_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(ZfsTimeout, match=r"did not finish within 0\.5 s; killed") as err:
        await QUICK.run(hung(pidfile))
    assert err.value.argv[0] == "sh"
    assert isinstance(err.value, ZfsError)  # callers that catch ZfsError still do
    assert gone(pidfile)


async def test_run_within_its_deadline_is_untouched() -> None:
    done = await QUICK.run(["sh", "-c", "echo ok"])
    assert (done.returncode, done.stdout_text) == (0, "ok\n")
    unbounded = replace(QUICK, timeout=None)
    assert (await unbounded.run(["true"])).returncode == 0


async def test_a_callers_deadline_kills_the_command_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await Runner().run(hung(pidfile))
    assert gone(pidfile)


async def test_a_send_that_stops_sending_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    stream = SendStream(QUICK, hung(pidfile, "printf abc;"))
    with pytest.raises(ZfsTimeout, match=r"sent no byte for 0\.5 s; killed"):
        async with stream:
            received = b""
            while len(received) < 3:
                received += await stream.read()
            assert received == b"abc"
            await stream.read()
    assert gone(pidfile)


async def test_a_slow_but_moving_stream_is_not_a_stall() -> None:
    # Eight bytes, one every 0.3 s: 2.4 s in all, never 2 s without a byte.
    argv = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do printf x; sleep 0.3; done"]
    async with SendStream(replace(QUICK, stall=2.0), argv) as stream:
        data = b"".join([chunk async for chunk in stream])
    assert data == b"x" * 8


async def test_a_receive_that_stops_reading_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    stream = ReceiveStream(QUICK, hung(pidfile))
    with pytest.raises(ZfsTimeout, match=r"took no byte for 0\.5 s; killed"):
        async with stream:
            # Far more than a pipe holds: drain() must wait for a reader that never reads.
            for _ in range(64):
                await stream.write(b"\0" * (1 << 20))
    assert gone(pidfile)


async def test_a_receive_that_never_exits_after_its_stream_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    stream = ReceiveStream(QUICK, hung(pidfile, "cat > /dev/null;"))
    with pytest.raises(ZfsTimeout, match=r"did not exit after its stream ended for 0\.5 s"):
        async with stream:
            await stream.write(b"payload")
    assert gone(pidfile)
