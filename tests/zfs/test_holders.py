"""Finding and stopping the processes that hold a mounted volume (zfs/holders.py),
on a real ZFS mount with real processes (zfs-fuse; OpenZFS in its tier).

What a self-fence on zfs-fuse relies on when its unmount is refused: it stops
exactly the holders (a file open for writing, a working directory inside, a file
mapped), none of the processes that merely run beside them, a process that
ignores SIGTERM too, and then the unmount succeeds. On a directory that is not a
mount it finds nothing: never the processes of the filesystem around it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ZfsNode
from zflock.zfs.holders import holders, holders_of, mount_device, stop_holders

# Holds what argv[1] names in the way argv[2] says, says "ready", then sleeps.
HOLD = """
import os, signal, sys, time
path, how = sys.argv[1], sys.argv[2]
if how == "write":
    held = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
elif how == "cwd":
    os.chdir(path)
elif how == "map":  # a library loaded from it: mapped, no descriptor left open
    import ctypes, shutil
    with open("/proc/self/maps") as maps:  # a copy of the libc this Python runs on
        libc = next(line.split()[-1] for line in maps if "/libc.so" in line or "/libc-" in line)
    shutil.copy(libc, path)
    held = ctypes.CDLL(path)
elif how == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    held = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
print("ready", flush=True)
time.sleep(600)
"""


@contextmanager
def holding(path: Path, how: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), how], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()  # by the PID it recorded
        proc.wait(timeout=30)


async def test_the_holders_are_stopped_and_only_they(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    zfs = zfs_node.zfs
    vol = f"{src_root}/held"
    await zfs.create(vol)
    mountpoint = zfs_node.path(vol)
    (mountpoint / "dir").mkdir()
    with (
        holding(mountpoint / "log", "write") as writer,
        holding(mountpoint / "dir", "cwd") as inside,
        holding(mountpoint / "mapped", "map") as mapper,
        holding(mountpoint / "stubborn", "stubborn") as stubborn,
        holding(tmp_path / "elsewhere", "write") as bystander,
    ):
        found = {h.pid for h in await holders_of(str(mountpoint))}
        assert found == {writer.pid, inside.pid, mapper.pid, stubborn.pid}
        # What a fence looks for first: only those that can still write.
        device = mount_device(str(mountpoint))
        assert device is not None
        assert {h.pid for h in await holders(device, writing=True)} == {writer.pid, stubborn.pid}
        stopped = await stop_holders(str(mountpoint))
        assert {h.pid for h in stopped} == found
        for proc in (writer, inside, mapper):
            assert proc.wait(timeout=5) == -signal.SIGTERM
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert bystander.poll() is None
        await zfs.unmount(vol)  # nothing holds it now
        assert await holders_of(str(mountpoint)) == []


async def test_nothing_is_found_on_a_directory_that_is_not_a_mount(
    zfs_node: ZfsNode, src_root: str
) -> None:
    """The seat belt: a volume not (or no longer) mounted leaves a plain directory, and
    everything on the filesystem around it must not count as holding it."""
    zfs = zfs_node.zfs
    vol = f"{src_root}/plain"
    await zfs.create(vol)
    directory = zfs_node.path(vol, "sub")
    directory.mkdir()
    assert mount_device(str(zfs_node.path(vol))) is not None
    assert mount_device(str(directory)) is None
    with holding(directory, "cwd") as inside:
        assert await holders_of(str(directory)) == []
        assert await stop_holders(str(directory)) == []
        assert inside.poll() is None
