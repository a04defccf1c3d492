"""Which ZFS a lab's nodes use: private zfs-fuse daemons (default) or the kernel's ZFS.

"fuse": every node runs its own zfs-fuse daemon in a private mount
namespace; that daemon owns the namespace, and every node has a pool named
`tank` (each daemon has its own pool namespace).

"native": kernel ZFS (OpenZFS; the emulated-VM test tier in
tests/openzfs-vm). There is no daemon: a long-lived holder process
(`sleep infinity` after nodeinit's binds) owns each node's private mount
namespace instead, and its PID is used for nsenter exactly as zfs-fuse's is.
Kernel pools are visible machine-wide, so every node gets a pool of its own
name (`zl<lab>n<index>`) and its agent is confined to `<pool>/zflock`.

The backend is chosen at `lab up` (argument, else $ZFLOCK_LAB_ZFS) and
recorded in the state file, so later commands never guess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from zflock.errors import UsageError, ZflockError
from zflock.lab.plan import POOL_NAME

BACKEND_ENV = "ZFLOCK_LAB_ZFS"
FUSE = "fuse"
NATIVE = "native"
BACKENDS = (FUSE, NATIVE)
# The process role that owns a node's mount namespace, per backend.
NAMESPACE_ROLE = {FUSE: "zfs-fuse", NATIVE: "holder"}


class LabBackendError(ZflockError):
    """A node's namespace holder could not be started."""


def lab_backend(value: str | None = None) -> str:
    """The backend to use: `value`, else $ZFLOCK_LAB_ZFS, else "fuse"."""
    chosen = value if value is not None else os.environ.get(BACKEND_ENV, FUSE)
    if chosen not in BACKENDS:
        raise UsageError(
            f"invalid lab ZFS backend {chosen!r} (from ${BACKEND_ENV} or --zfs): "
            f"use one of {', '.join(BACKENDS)}"
        )
    return chosen


def node_pool_name(backend: str, lab: str, index: int) -> str:
    """Pure: the pool of node `index` (1-based): unique per lab and node on kernel ZFS,
    where pool names are machine-wide (the "zl" prefix keeps a lab named
    "c1..." from looking like a disk name); `tank` in every zfs-fuse node."""
    if backend == NATIVE:
        return f"zl{lab}n{index}"
    return POOL_NAME


def start_holder(
    state_dir: Path,
    *,
    netns: str,
    extra_binds: tuple[tuple[Path, str], ...],
    timeout: float = 15.0,
) -> int:
    """Start a node's namespace holder; return its PID (the `sleep` itself, via exec).

    Like zfsfuse.start_zfs_fuse: inside `netns`, in a new private mount
    namespace where nodeinit bind-mounts each private directory over its path.
    Returns once the binds are in place (the holder runs `sleep`).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    binds: list[str] = []
    for src, dst in extra_binds:
        src.mkdir(parents=True, exist_ok=True)
        os.makedirs(dst, exist_ok=True)
        binds += ["--bind", f"{src}:{dst}"]
    argv = [
        "ip", "netns", "exec", netns,
        "unshare", "-m", "--propagation", "private", "--",
        sys.executable, "-m", "zflock.lab.nodeinit", *binds, "--",
        "sleep", "infinity",
    ]  # fmt: skip
    log_path = state_dir / "holder.log"
    log = open(log_path, "ab")  # handed to the child
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while _comm(proc.pid) != "sleep":
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-500:].strip()
            raise LabBackendError(f"node holder exited with status {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise LabBackendError(f"node holder did not start within {timeout:.0f} s")
        time.sleep(0.02)
    # The caller owns the PID from here on (recorded in the lab state).
    proc.returncode = 0
    return proc.pid


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
