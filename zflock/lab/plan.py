"""Pure planning of a lab: names, addresses and paths, decided before any I/O.

Everything `lab up` creates is named here, from the lab name and the node
count alone (plus the subnets other labs already use), so `lab down` can
remove exactly those things and a unit test can check every rule without root.

Naming rules, and why:
- Lab names: 1-10 characters of [a-z0-9-], starting with a letter, not ending
  with "-". Linux interface names are limited to 15 characters (IFNAMSIZ - 1)
  and the bridge (`zfl-<lab>`) and the host ends of the veth pairs
  (`zf<i>-<lab>`, i up to 2 digits) carry the lab name.
- Node names: node1..nodeN. Inside its network namespace each node's end of
  its veth pair is called `eth0`, as on a real host.
- Subnets: 10.77.X.0/24, X derived from the lab name (stable across runs),
  moved to the next free X when another lab or a host route already has it.
  The host is .1 on the lab bridge; nodes are .11, .12, ...
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from zflock.errors import UsageError

MAX_LAB_NAME = 10
MIN_NODES = 1
MAX_NODES = 16
IFNAMSIZ = 15  # usable characters in a Linux interface name
SUBNET_PREFIX = "10.77"
HOST_OCTET = 1
FIRST_NODE_OCTET = 11
NODE_IFNAME = "eth0"
POOL_NAME = "tank"
POOL_ROOT = "tank/zflock"  # the dataset under which the agent will keep volumes
MOUNT_ROOT = "/zflock"  # where the agent mounts volumes inside a node
DEFAULT_POOL_SIZE = 1 << 30
MIN_POOL_SIZE = 64 << 20  # zfs-fuse refuses vdevs smaller than 64 MiB
DEFAULT_LAB_NAME = "lab"
DEFAULT_ROOT = Path("/var/lib/zflock-lab")

_LAB_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_NODE_NAME_RE = re.compile(r"^node([1-9][0-9]*)$")
_SIZE_RE = re.compile(r"^([0-9]+)([KMGT]?)(i?B)?$", re.IGNORECASE)


class InvalidLabName(UsageError):
    """A lab name breaks the naming rules."""


class UnknownNode(UsageError):
    """A node name that is not part of the lab."""


def validate_lab_name(name: str) -> str:
    """Return `name` if it is a valid lab name, else raise InvalidLabName naming the rule."""
    if not name:
        raise InvalidLabName("invalid lab name '': must not be empty")
    if len(name) > MAX_LAB_NAME:
        raise InvalidLabName(
            f"invalid lab name {name!r}: at most {MAX_LAB_NAME} characters "
            "(it is part of network interface names)"
        )
    for ch in name:
        if ch not in _LAB_NAME_CHARS:
            raise InvalidLabName(
                f"invalid lab name {name!r}: character {ch!r} not allowed (use a-z, 0-9, -)"
            )
    if not _LAB_NAME_RE.match(name):
        raise InvalidLabName(f"invalid lab name {name!r}: must start with a letter a-z")
    if name.endswith("-"):
        raise InvalidLabName(f"invalid lab name {name!r}: must not end with '-'")
    return name


def validate_node_count(nodes: int) -> int:
    if not MIN_NODES <= nodes <= MAX_NODES:
        raise UsageError(f"invalid node count {nodes}: must be between {MIN_NODES} and {MAX_NODES}")
    return nodes


def node_name(index: int) -> str:
    """The name of the node with 1-based `index`."""
    return f"node{index}"


def node_index(name: str) -> int | None:
    """The 1-based index of a well-formed node name, or None."""
    m = _NODE_NAME_RE.match(name)
    return int(m.group(1)) if m else None


def parse_size(text: str) -> int:
    """Parse a pool size like '1G', '512M', '256MiB' or a byte count (binary units)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid pool size {text!r}: expected a number with K, M, G or T")
    value = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]
    if value < MIN_POOL_SIZE:
        raise UsageError(f"invalid pool size {text!r}: at least 64M (zfs-fuse's smallest vdev)")
    return value


def subnet_octet(name: str, taken: Collection[int] = ()) -> int:
    """The third octet of the lab's 10.77.X.0/24: stable per name, skipping `taken`."""
    start = zlib.crc32(name.encode()) % 254 + 1  # 1..254
    for step in range(254):
        octet = (start - 1 + step) % 254 + 1
        if octet not in taken:
            return octet
    raise UsageError("no free lab subnet left in 10.77.0.0/16; take some labs down first")


@dataclass(frozen=True)
class NodePlan:
    name: str  # node1
    index: int  # 1
    netns: str  # zfl-<lab>-node1
    address: str  # 10.77.X.11
    host_veth: str  # zf1-<lab>, the host end, a port of the lab bridge
    node_veth: str  # eth0, inside the namespace
    dir: Path  # <lab dir>/node1
    pool_file: Path  # <node dir>/tank.img

    @property
    def zfs_fuse_dir(self) -> Path:
        return self.dir / "zfs-fuse"

    @property
    def mount_root_dir(self) -> Path:
        """Private directory bound over MOUNT_ROOT inside the node."""
        return self.dir / "mnt"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"


@dataclass(frozen=True)
class LabPlan:
    name: str
    subnet: str  # 10.77.X.0/24
    prefixlen: int
    host_address: str  # 10.77.X.1
    bridge: str  # zfl-<lab>
    dir: Path  # <root>/<lab>
    state_file: Path  # <root>/<lab>.json
    pool_size: int
    nodes: tuple[NodePlan, ...]

    @property
    def operator_key(self) -> Path:
        """The lab's SSH client key; its .pub is every node's authorized key."""
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise UnknownNode(f"unknown node {name!r} in lab {self.name!r}")


def lab_dir(root: Path, name: str) -> Path:
    return root / validate_lab_name(name)


def state_file(root: Path, name: str) -> Path:
    return root / f"{validate_lab_name(name)}.json"


def plan_lab(
    name: str,
    nodes: int,
    *,
    root: Path = DEFAULT_ROOT,
    taken_subnets: Collection[int] = (),
    pool_size: int = DEFAULT_POOL_SIZE,
) -> LabPlan:
    """Decide every name, address and path of a lab. Pure; raises UsageError on bad input."""
    validate_lab_name(name)
    validate_node_count(nodes)
    octet = subnet_octet(name, taken_subnets)
    base = f"{SUBNET_PREFIX}.{octet}"
    directory = lab_dir(root, name)
    node_plans = []
    for i in range(1, nodes + 1):
        nname = node_name(i)
        ndir = directory / nname
        node_plans.append(
            NodePlan(
                name=nname,
                index=i,
                netns=f"zfl-{name}-{nname}",
                address=f"{base}.{FIRST_NODE_OCTET + i - 1}",
                host_veth=f"zf{i}-{name}",
                node_veth=NODE_IFNAME,
                dir=ndir,
                pool_file=ndir / f"{POOL_NAME}.img",
            )
        )
    plan = LabPlan(
        name=name,
        subnet=f"{base}.0/24",
        prefixlen=24,
        host_address=f"{base}.{HOST_OCTET}",
        bridge=f"zfl-{name}",
        dir=directory,
        state_file=state_file(root, name),
        pool_size=pool_size,
        nodes=tuple(node_plans),
    )
    # The rules above guarantee this; keep the check next to the kernel's limit.
    for ifname in [plan.bridge, *(n.host_veth for n in plan.nodes)]:
        assert len(ifname) <= IFNAMSIZ, ifname
    return plan
