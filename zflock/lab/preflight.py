"""What `lab up` needs from the machine, checked before anything is created.

Each check returns one line naming what is missing and how to get it; the
first failing check is reported and nothing is created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from zflock.errors import ZflockError

PACKAGE_OF = {
    "zfs-fuse": "zfs-fuse",
    "zpool": "zfs-fuse",
    "zfs": "zfs-fuse",
    "ip": "iproute2",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "truncate": "coreutils",
}
# zfs-fuse and friends live in /usr/sbin, which a non-login root shell may
# not have on PATH; look there too.
EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class LabPrerequisiteMissing(ZflockError):
    """The machine lacks something the lab needs (root, a program, a kernel feature)."""


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in EXTRA_DIRS:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def check_root(euid: int | None = None) -> str | None:
    if (os.geteuid() if euid is None else euid) != 0:
        return "zflock lab needs root (network namespaces, FUSE and mounts); run it as root"
    return None


def check_programs(find: Callable[[str], str | None] = find_program) -> str | None:
    for name, package in PACKAGE_OF.items():
        if find(name) is None:
            return f"zflock lab needs `{name}`, which is not installed (apt-get install {package})"
    return None


def check_fuse(dev: Path = Path("/dev/fuse")) -> str | None:
    if not dev.exists():
        return f"zflock lab needs FUSE for zfs-fuse but {dev} is missing (modprobe fuse)"
    return None


def check_namespaces() -> str | None:
    for kind in ("net", "mnt"):
        if not Path(f"/proc/self/ns/{kind}").exists():
            return f"zflock lab needs {kind} namespaces; this kernel has no /proc/self/ns/{kind}"
    # A throwaway network namespace proves we may create one (a container
    # without CAP_SYS_ADMIN fails here); it vanishes when `true` exits.
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "true"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if probe.returncode != 0:
        why = probe.stderr.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
        return f"zflock lab cannot create network/mount namespaces here: {why[0]}"
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if listing.returncode != 0:
        why = listing.stderr.strip().splitlines()[-1:] or [f"exit status {listing.returncode}"]
        return f"zflock lab needs `ip netns`, which does not work here: {why[0]}"
    return None


def check_kernel_zfs(dev: Path = Path("/dev/zfs")) -> str | None:
    if not dev.exists():
        return f"zflock lab (kernel ZFS) needs {dev}, which is missing (modprobe zfs)"
    return None


def check_native_programs(find: Callable[[str], str | None] = find_program) -> str | None:
    """Like check_programs, for kernel ZFS: zfs/zpool from zfsutils-linux, no zfs-fuse."""
    packages = {n: p for n, p in PACKAGE_OF.items() if p != "zfs-fuse"}
    packages |= {"zfs": "zfsutils-linux", "zpool": "zfsutils-linux", "sleep": "coreutils"}
    for name, package in packages.items():
        if find(name) is None:
            return f"zflock lab needs `{name}`, which is not installed (apt-get install {package})"
    return None


def preflight(backend: str | None = None) -> None:
    """Raise LabPrerequisiteMissing with one line for the first missing prerequisite.

    `backend` is zflock.lab.backend's: "fuse" (zfs-fuse daemons) or "native";
    None means $ZFLOCK_LAB_ZFS, else "fuse".
    """
    from zflock.lab.backend import lab_backend

    backend = lab_backend(backend)
    checks: tuple[Callable[[], str | None], ...] = (
        (check_root, check_programs, check_fuse, check_namespaces)
        if backend == "fuse"
        else (check_root, check_native_programs, check_kernel_zfs, check_namespaces)
    )
    for check in checks:
        problem = check()
        if problem:
            raise LabPrerequisiteMissing(problem)
