"""Dropping a mounted filesystem's pages from the kernel's page cache, ahead of an unmount.

What a fence on zfs-fuse needs besides ZFS commands (move/zfs_source.py), like
holders.py. There the fence unmounts the source, and a FUSE unmount evicts every
page the kernel still caches for the filesystem's files first: about 0.09 s per
GiB cached on the lab's machines (docs/benchmarks.md), inside the downtime. A
volume whose consumer just wrote or read a lot of it pays that on its next move.
Dropped while the consumer still runs, before the cutover, that time leaves the
downtime: `posix_fadvise(POSIX_FADV_DONTNEED)` on every regular file drops its
clean pages (FUSE without writeback cache has no others), and the unmount then
has nothing left to evict (1 GiB cached: unmount 0.091 s, after the drop 0.009 s,
tried 2026-12-05). On OpenZFS the fence does not unmount, and nothing here runs.

The files are the consumer's, so untrusted: the walk follows no symlink, does not
leave the filesystem (a directory on another device is skipped), and opens only
what is a regular file when opened: it takes an `O_PATH` descriptor (which opens
nothing), checks that one with fstat, and reopens the same inode through
/proc/self/fd, so a FIFO or a device node swapped in meanwhile is never opened
(zfs-fuse mounts without `nodev`). It is best effort and bounded: it stops at
`budget` seconds, and an error on one file skips that file.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

DROP_BUDGET = 2.0  # seconds the walk may take at most; whatever it dropped by then counts

_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOATIME


@dataclass(frozen=True)
class Dropped:
    files: int  # regular files whose cached pages were dropped
    complete: bool  # False: the budget ran out before the walk ended
    seconds: float

    def describe(self) -> str:
        end = "" if self.complete else f", stopped at its {DROP_BUDGET:g} s budget"
        return f"dropped the cached pages of {self.files} files in {self.seconds:.3f} s{end}"


def _drop_file(dir_fd: int, name: str, device: int) -> bool:
    """Drop one regular file's pages (False: not a regular file here, or an error)."""
    try:
        path_fd = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != device:
            return False
        fd = os.open(f"/proc/self/fd/{path_fd}", _READ_FLAGS)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(path_fd)


def drop_cached_pages(mountpoint: str, device: int, budget: float = DROP_BUDGET) -> Dropped:
    """Drop the cached pages of the regular files of the filesystem `device` mounted at
    `mountpoint` (module docstring). Blocking: run it in a thread."""
    started = time.monotonic()
    deadline = started + budget
    dropped = 0
    pending = [mountpoint]
    while pending:
        directory = pending.pop()
        try:
            dir_fd = os.open(directory, _DIR_FLAGS)
        except OSError:
            continue
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    if time.monotonic() > deadline:
                        return Dropped(dropped, False, round(time.monotonic() - started, 3))
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if entry.stat(follow_symlinks=False).st_dev == device:
                                pending.append(os.path.join(directory, entry.name))
                        elif entry.is_file(follow_symlinks=False):
                            dropped += _drop_file(dir_fd, entry.name, device)
                    except OSError:
                        continue
        finally:
            os.close(dir_fd)
    return Dropped(dropped, True, round(time.monotonic() - started, 3))
