"""One machine-wide lock around `lab up` and `lab down`.

It serialises labs being built or removed at the same time (several test
runs in parallel), which also makes the choice of a free subnet race-free.
The lock file lives in /run/lock, the conventional place for it, and is
never deleted (deleting a lock file others may be waiting on breaks it).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = Path("/run/lock/zflock-lab.lock")


@contextmanager
def lab_lock(path: Path = LOCK_FILE) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
