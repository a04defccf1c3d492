"""Start and stop a private zfs-fuse daemon in its own mount namespace.

zfs-fuse keeps its control socket, lock file, pool cache and config at fixed
paths. To run several independent daemons on one machine (one per lab node,
or one per test), each runs in a private mount namespace with a private
directory bind-mounted over each of those paths (see LAB.md). Every `zfs` or
`zpool` command for that daemon must run in the same mount namespace:
`nsenter --mount=/proc/PID/ns/mnt -- zfs ...` (see `nsenter_prefix`).

The PID returned is the daemon's own PID (nodeinit and unshare exec), so the
caller can record it and later stop exactly that process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zflock.errors import ZflockError

# Fixed paths of zfs-fuse that must be private per daemon.
ZFS_FUSE_PATHS = ("/var/run/zfs", "/var/lock/zfs", "/var/lib/zfs", "/etc/zfs")
SOCKET_NAME = "zfs_socket"


class ZfsFuseError(ZflockError):
    """zfs-fuse could not be started or stopped."""


@dataclass(frozen=True)
class ZfsFuseDaemon:
    pid: int
    state_dir: Path

    def nsenter_prefix(self, *, net: bool = False) -> list[str]:
        """argv prefix that runs a command in this daemon's mount (and net) namespace."""
        argv = ["nsenter", f"--mount=/proc/{self.pid}/ns/mnt"]
        if net:
            argv.append(f"--net=/proc/{self.pid}/ns/net")
        return [*argv, "--"]

    def host_path(self, path: str) -> Path:
        """A path as seen inside the daemon's mount namespace, reachable from the host."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")


def _private_dir(state_dir: Path, path: str) -> Path:
    return state_dir / "ns" / path.strip("/").replace("/", "_")


def start_zfs_fuse(
    state_dir: Path,
    *,
    netns: str | None = None,
    extra_binds: tuple[tuple[Path, str], ...] = (),
    timeout: float = 15.0,
    max_arc_mb: int | None = None,
) -> ZfsFuseDaemon:
    """Start zfs-fuse in a new private mount namespace (inside `netns` if given).

    `extra_binds` are (host directory, path inside) pairs, e.g. a private
    directory over the volumes' mount root so mounts never touch the host's
    directory tree. `max_arc_mb` caps the daemon's ARC (its `--max-arc-size`; None:
    zfs-fuse's default, which holds little of a pool with hundreds of datasets and
    thousands of snapshots: docs/benchmarks.md, "Continuous replication at scale").
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    binds: list[str] = []
    for path in ZFS_FUSE_PATHS:
        private = _private_dir(state_dir, path)
        private.mkdir(parents=True, exist_ok=True)
        # The mount target must exist in the root filesystem for the bind.
        os.makedirs(path, exist_ok=True)
        binds += ["--bind", f"{private}:{path}"]
    for src, dst in extra_binds:
        src.mkdir(parents=True, exist_ok=True)
        os.makedirs(dst, exist_ok=True)
        binds += ["--bind", f"{src}:{dst}"]
    argv = [
        "unshare", "-m", "--propagation", "private", "--",
        sys.executable, "-m", "zflock.lab.nodeinit", *binds, "--",
        "zfs-fuse", "--no-daemon", "--no-kstat-mount",
        *(["--max-arc-size", str(max_arc_mb)] if max_arc_mb is not None else []),
    ]  # fmt: skip
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = open(state_dir / "zfs-fuse.log", "ab")  # handed to the child
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()
    daemon = ZfsFuseDaemon(pid=proc.pid, state_dir=state_dir)
    socket = _private_dir(state_dir, "/var/run/zfs") / SOCKET_NAME
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if proc.poll() is not None:
            tail = (state_dir / "zfs-fuse.log").read_text(errors="replace")[-500:]
            raise ZfsFuseError(f"zfs-fuse exited with status {proc.returncode}: {tail.strip()}")
        if time.monotonic() > deadline:
            stop_zfs_fuse(proc.pid)
            raise ZfsFuseError(f"zfs-fuse did not create its socket within {timeout:.0f} s")
        time.sleep(0.02)
    # Popen objects warn if garbage collected while the child runs; the
    # caller owns the PID from here on.
    proc.returncode = 0
    return daemon


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rsplit(")", 1)[1].split()[0]


def stop_zfs_fuse(pid: int, timeout: float = 15.0) -> None:
    """Stop the daemon with this recorded PID: SIGTERM, then SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
