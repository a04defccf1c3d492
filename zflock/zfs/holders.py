"""The processes that hold a mounted filesystem, and stopping them.

What a fence on zfs-fuse needs besides ZFS commands (move/zfs_source.py,
agent/selffence_zfs.py): there `readonly=on` does not stop a write through a
file opened before it, so the fence is whole only when no process can still
write to the filesystem. The unmount is refused while a process holds it
through this mount; but a holder through another mount of the same filesystem
(a container's bind mount, in its own mount namespace) does not make it busy:
`zfs unmount` succeeds and that process goes on writing into the dataset
(tried 2026-12-05, as was `zfs unmount -f`: a lazy detach, the held file goes
on writing). So a fence also looks, by device, for processes still holding a
file open for writing, whatever mount they went through.

A process holds the filesystem when one of its descriptors, its working or
root directory, its executable or a mapped file is on the filesystem's device
(`st_dev`; a holder in another mount namespace counts too); it holds it *for
writing* through a descriptor opened for writing or a shared writable mapping.
`mount_device` gives the device only for a mountpoint that is a mount (its
device differs from its parent's): on a plain directory there is nothing to
look for, rather than every process of the filesystem around it.

Stopping is what Pacemaker's Filesystem agent does with `force_unmount`:
SIGTERM, a grace period, SIGKILL. Written here rather than run as `fuser -k`:
psmisc is not on minimal images, `fuser` cannot tell writers from readers, and
the processes are signalled through pidfds taken after a second check, so a
PID reused in between is never hit.
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

log = logging.getLogger("zflock.zfs.holders")
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 1.0  # how long the SIGKILLed get to be gone
SCAN_TIMEOUT = 2.0  # a stat of a file on a hung filesystem elsewhere must not hang us
# What stopping the writers adds to a fence, at most: the scan and both waits.
STOP_BOUND = SCAN_TIMEOUT + TERM_GRACE + KILL_WAIT
NEVER = frozenset({1})  # init: stopping it would stop the machine


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str  # for the log: its command line, cut short

    def describe(self) -> str:
        return f"{self.pid} ({self.command})"


# What a scan that did not finish in time answers: never "nothing holds it".
UNKNOWN = Holder(0, "unknown: the scan did not finish")


def describe(holders: list[Holder]) -> str:
    return ", ".join(h.describe() for h in holders) or "none found"


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


def _opened_for_writing(proc: str, fd: str) -> bool:
    try:
        info = Path(f"{proc}/fdinfo/{fd}").read_text()
    except OSError:
        return False
    for line in info.splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def holds(pid: int, device: int, *, writing: bool = False) -> bool:
    """Whether process `pid` holds `device` (for writing, with `writing`): module docstring."""
    proc = f"/proc/{pid}"
    if not writing and any(_on(f"{proc}/{link}", device) for link in ("cwd", "root", "exe")):
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
            if not writing or _opened_for_writing(proc, fd):
                return True
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}"
    try:
        maps = Path(f"{proc}/maps").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    if f" {wanted} " not in maps:  # most processes map nothing of it: no line split
        return False
    for line in maps.splitlines():
        fields = line.split(maxsplit=4)  # range, perms, offset, dev, inode...
        if fields[3:4] == [wanted] and (
            not writing or (fields[1].startswith("rw") and "s" in fields[1])
        ):
            return True
    return False


def find_holders(device: int, *, writing: bool = False) -> list[Holder]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in NEVER | {me}:
            continue
        pid = int(entry)
        if holds(pid, device, writing=writing):
            found.append(Holder(pid, _command(pid)))
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120] or "?"


async def device_of(mountpoint: str) -> int | None:
    """`mount_device`, off the event loop (a stat on a FUSE mount is a daemon round trip)."""
    return await asyncio.to_thread(mount_device, mountpoint)


async def holders(device: int, *, writing: bool = False) -> list[Holder]:
    """The processes holding `device` (for writing, with `writing`); bounded by SCAN_TIMEOUT,
    after which it says so and answers as if it had found `unknown`: never "none"."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(find_holders, device, writing=writing), SCAN_TIMEOUT
        )
    except TimeoutError:
        log.error("looking for the processes holding device %d took over %g s", device,
                  SCAN_TIMEOUT)  # fmt: skip
        return [UNKNOWN]


async def holders_of(mountpoint: str) -> list[Holder]:
    """The processes holding what is mounted at `mountpoint` ([] if nothing is)."""
    device = await device_of(mountpoint)
    return [] if device is None else await holders(device)


async def stop(
    device: int, found: list[Holder] | None = None, *, writing: bool = False
) -> list[Holder]:
    """End every process holding `device` (for writing, with `writing`): SIGTERM, then
    SIGKILL after TERM_GRACE. `found`: what the caller's own scan just found (else
    scanned here); each is checked again before it is signalled. Returns those it
    signalled. Bounded by STOP_BOUND (the scan, and both waits)."""
    pidfds: dict[int, Holder] = {}
    for holder in found if found is not None else await holders(device, writing=writing):
        if holder is UNKNOWN:
            continue
        try:
            fd = os.pidfd_open(holder.pid)
        except OSError:  # gone already
            continue
        # Checked again through the pidfd's process: the PID may have been reused.
        if not holds(holder.pid, device, writing=writing):
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


async def stop_holders(mountpoint: str) -> list[Holder]:
    """`stop` for what is mounted at `mountpoint` ([] if nothing is)."""
    device = await device_of(mountpoint)
    return [] if device is None else await stop(device)


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
