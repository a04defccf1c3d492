"""Network plumbing of the lab with `ip`: namespaces, the bridge, veth pairs.

Every function takes the names decided by `plan.py`; deletions tolerate
things that are already gone so `lab down` can run any number of times.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from zflock.errors import ZflockError
from zflock.lab.plan import SUBNET_PREFIX

NETNS_DIR = Path("/run/netns")


class LabNetworkError(ZflockError):
    """An `ip` command of the lab failed."""


def ip(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise LabNetworkError(f"{' '.join(argv)}: {detail[0]}")
    return proc


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def add_netns(name: str) -> None:
    ip(["netns", "add", name])
    # Loopback up, as on any host (sshd, local clients of a node's services).
    ip(["-n", name, "link", "set", "lo", "up"])


def del_netns(name: str) -> None:
    if netns_exists(name):
        ip(["netns", "del", name])


def add_bridge(name: str, address: str, prefixlen: int) -> None:
    """The lab's bridge in the host namespace; the host is a client at `address`."""
    ip(["link", "add", name, "type", "bridge"])
    ip(["addr", "add", f"{address}/{prefixlen}", "dev", name])
    ip(["link", "set", name, "up"])


def add_node_link(
    *,
    bridge: str,
    host_veth: str,
    netns: str,
    node_veth: str,
    address: str,
    prefixlen: int,
) -> None:
    """A veth pair: host end a port of the bridge, node end in `netns` with `address`."""
    # Creating the peer directly in the namespace lets it carry its final
    # name (eth0) without ever clashing with the host's own eth0.
    ip(["link", "add", host_veth, "type", "veth", "peer", "name", node_veth, "netns", netns])
    ip(["link", "set", host_veth, "master", bridge, "up"])
    ip(["-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", node_veth])
    ip(["-n", netns, "link", "set", node_veth, "up"])


def del_link(name: str) -> None:
    if link_exists(name):
        proc = ip(["link", "del", name], check=False)
        # Deleting one end of a veth pair removes the other; it may be gone
        # by now because its namespace went away.
        if proc.returncode != 0 and link_exists(name):
            raise LabNetworkError(f"ip link del {name}: {proc.stderr.strip()}")


_LAB_NET_RE = re.compile(rf"\b{re.escape(SUBNET_PREFIX)}\.(\d+)\.\d+")


def used_lab_octets() -> set[int]:
    """Third octets of 10.77.X.* already used by host addresses or routes."""
    text = ip(["-4", "-o", "addr", "show"]).stdout + ip(["-4", "route", "show"]).stdout
    return {int(m.group(1)) for m in _LAB_NET_RE.finditer(text)}
