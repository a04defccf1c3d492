"""Processes of the lab: identify them by recorded PID and start time, stop exactly those.

A PID alone can be recycled (after a reboot, or a long time later), so every
recorded process also carries its start time from /proc/PID/stat. A PID whose
start time differs is somebody else's process and is never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zflock.lab.zfsfuse import pid_alive


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    starttime: int  # clock ticks since boot, field 22 of /proc/PID/stat

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "starttime": self.starttime}

    @classmethod
    def from_json(cls, data: dict[str, int]) -> ProcessRecord:
        return cls(pid=int(data["pid"]), starttime=int(data["starttime"]))


def process_starttime(pid: int) -> int | None:
    """The start time of process `pid`, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields
    # after the last ')' are plain numbers. starttime is field 22 overall.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def record(pid: int) -> ProcessRecord:
    """Record a process we just started."""
    start = process_starttime(pid)
    if start is None:
        raise ProcessLookupError(pid)
    return ProcessRecord(pid=pid, starttime=start)


def is_running(rec: ProcessRecord) -> bool:
    """True when the recorded process (not a recycled PID) is alive and not a zombie."""
    return process_starttime(rec.pid) == rec.starttime and pid_alive(rec.pid)


def stop(rec: ProcessRecord, *, timeout: float = 10.0) -> None:
    """SIGTERM the recorded process, SIGKILL it after `timeout`; no-op if it is gone."""
    stop_all([rec], timeout=timeout)


def stop_all(recs: Iterable[ProcessRecord], *, timeout: float = 10.0) -> None:
    """Stop several recorded processes at once: SIGTERM all, SIGKILL those left after `timeout`.

    In parallel because zfs-fuse takes seconds to exit on SIGTERM once it
    has served a client; one node after the other would add those up.
    """
    pending = list(recs)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pending = [r for r in pending if is_running(r)]
        for rec in pending:
            try:
                os.kill(rec.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = [r for r in pending if is_running(r)]
            time.sleep(0.02)
        if not pending:
            return


def namespace_inode(path: str | Path) -> int | None:
    """The inode of a namespace file (/proc/PID/ns/net, /run/netns/NAME), or None."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_namespaces(*, net: Iterable[int] = (), mnt: Iterable[int] = ()) -> list[int]:
    """PIDs of processes whose network or mount namespace has one of these inodes.

    Used by `lab down` to find what is still running inside a node (an ssh
    session, a `lab exec` command) after the recorded processes are stopped:
    membership of the node's namespaces, not a process name, decides.
    """
    net_set, mnt_set = set(net), set(mnt)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if net_set and namespace_inode(entry / "ns" / "net") in net_set:
            found.append(pid)
        elif mnt_set and namespace_inode(entry / "ns" / "mnt") in mnt_set:
            found.append(pid)
    return found


def own_ancestry() -> set[int]:
    """This process and its ancestors: never signalled, even when inside a node."""
    pids = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def kill_namespace_members(
    *, net: Iterable[int] = (), mnt: Iterable[int] = (), spare: Iterable[int] = ()
) -> list[int]:
    """SIGKILL every process in these namespaces except `spare` and ourselves; return PIDs."""
    spare = own_ancestry() | set(spare)
    killed = []
    for _ in range(3):  # a dying parent may fork once more; look again
        pids = [p for p in pids_in_namespaces(net=net, mnt=mnt) if p not in spare]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.02)
    return killed
