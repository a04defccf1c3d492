"""The processes that hold a mounted filesystem, and stopping them.

What a self-fence does on zfs-fuse when a consumer its stop hook did not stop
still holds the volume (selffence_zfs.py, docs/failover.md): there
`readonly=on` does not stop a write through a file opened before it, and
`zfs unmount -f` is no way out either: it detaches the mount lazily and a held
descriptor goes on writing into the dataset (tried 2026-12-05). Only ending
the holders makes the fence whole, as Pacemaker's Filesystem agent does with
`force_unmount`: SIGTERM, a grace period, then SIGKILL.

Written here rather than run as `fuser -k -M -m`: psmisc is not on minimal
images, and the processes are signalled through pidfds taken after the check,
so a PID reused between the scan and the signal is never hit.

A process holds the filesystem when one of its descriptors, its working or
root directory, its executable or a mapped file is on the mount's device
(compared by `st_dev`, so a holder in another mount namespace counts too).
The mountpoint must be a mount (its device differs from its parent's): on a
plain directory this finds nothing rather than every process of the parent
filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("zflock.agent.holders")
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 1.0  # how long the SIGKILLed get to be gone
SCAN_TIMEOUT = 2.0  # a stat of a file on a hung filesystem elsewhere must not hang us
# What stopping the holders adds to a fence, at most: the scan, both waits, and
# the unmount's own retries after it (zflock.zfs.mounting.MOUNT_RETRY_SECONDS).
STOP_BOUND = SCAN_TIMEOUT + TERM_GRACE + KILL_WAIT + 3.0
NEVER = frozenset({1})  # init: stopping it would stop the machine


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # for the log: its command line, cut short

    def describe(self) -> str:
        return f"{self.pid} ({self.command})"


def mount_device(mountpoint: str) -> int | None:
    """The device of the filesystem mounted at `mountpoint`; None if nothing is mounted there."""
    try:
        here = os.stat(mountpoint).st_dev
        parent = os.stat(os.path.dirname(mountpoint.rstrip("/")) or "/").st_dev
    except OSError:
        return None
    return here if here != parent else None


def _on(path: str, device: int) -> bool:
    try:
        return os.stat(path).st_dev == device
    except OSError:  # gone, or not ours to see
        return False


def holds(pid: int, device: int) -> bool:
    """Whether process `pid` has anything on `device` (module docstring)."""
    proc = f"/proc/{pid}"
    if any(_on(f"{proc}/{link}", device) for link in ("cwd", "root", "exe")):
        return True
    try:
        fds = os.listdir(f"{proc}/fd")
    except OSError:
        fds = []
    for fd in fds:
        try:
            target = os.readlink(f"{proc}/fd/{fd}")
        except OSError:
            continue
        # Sockets, pipes, eventfds...: never on a mount, and a stat of each costs.
        if target.startswith("/") and _on(f"{proc}/fd/{fd}", device):
            return True
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}"
    try:
        maps = Path(f"{proc}/maps").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.split(maxsplit=4)[3:4] == [wanted] for line in maps.splitlines())


def find_holders(device: int) -> list[Holder]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in NEVER | {me}:
            continue
        pid = int(entry)
        if holds(pid, device):
            found.append(Holder(pid, _command(pid)))
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120] or "?"


async def holders_of(mountpoint: str) -> list[Holder]:
    """The processes holding what is mounted at `mountpoint` (bounded: SCAN_TIMEOUT)."""
    device = await asyncio.to_thread(mount_device, mountpoint)
    if device is None:
        return []
    try:
        return await asyncio.wait_for(asyncio.to_thread(find_holders, device), SCAN_TIMEOUT)
    except TimeoutError:
        log.error("looking for the processes holding %s took over %g s", mountpoint, SCAN_TIMEOUT)
        return []


async def stop_holders(mountpoint: str) -> list[Holder]:
    """End every process holding `mountpoint`'s filesystem: SIGTERM, then SIGKILL after
    TERM_GRACE. Returns those it signalled. Bounded by STOP_BOUND less the unmount."""
    found = await holders_of(mountpoint)
    device = mount_device(mountpoint)
    pidfds: dict[int, Holder] = {}
    for holder in found:
        try:
            fd = os.pidfd_open(holder.pid)
        except OSError:  # gone already
            continue
        # Checked again through the pidfd's process: the PID may have been reused.
        if device is None or not holds(holder.pid, device):
            os.close(fd)
            continue
        pidfds[fd] = holder
    try:
        for sig, wait in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_WAIT)):
            alive = [fd for fd in pidfds if not _exited(fd)]
            if not alive:
                break
            for fd in alive:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
            await _wait_exit(alive, wait)
    finally:
        for fd in pidfds:
            os.close(fd)
    return list(pidfds.values())


def _exited(pidfd: int) -> bool:
    # A pidfd reads as ready once its process has exited.
    return bool(select.select([pidfd], [], [], 0)[0])


async def _wait_exit(pidfds: list[int], seconds: float) -> None:
    """Until every process of `pidfds` has exited, or `seconds` passed."""
    loop = asyncio.get_running_loop()
    pending = {fd for fd in pidfds if not _exited(fd)}
    gone = asyncio.Event()

    def exited(fd: int) -> None:
        loop.remove_reader(fd)
        pending.discard(fd)
        if not pending:
            gone.set()

    if not pending:
        return
    for fd in pending:
        loop.add_reader(fd, exited, fd)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), seconds)
    finally:
        for fd in list(pending):
            loop.remove_reader(fd)
