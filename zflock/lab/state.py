"""The lab's state file: one JSON file per lab, rewritten atomically after every step.

It records everything `lab up` made (names of the bridge, veths and network
namespaces, addresses, PIDs with their start times, paths), so that another
shell, a test fixture or `lab down` after a crash half-way through `up` can
use or remove exactly those things. Each resource is recorded *before* it is
created: `lab down` then tries to remove it and tolerates its absence.

Location: `<root>/<lab>.json` next to the lab's directory `<root>/<lab>/`,
with root `/var/lib/zflock-lab` (or $ZFLOCK_LAB_ROOT). It lives under
/var/lib rather than /run so that after a reboot (namespaces and processes
gone) `lab down` still finds and removes the pool files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zflock.errors import ZflockError
from zflock.lab.plan import (
    DEFAULT_ROOT,
    MOUNT_ROOT,
    POOL_NAME,
    POOL_ROOT,
    LabPlan,
    UnknownNode,
    state_file,
)
from zflock.lab.procs import ProcessRecord

STATE_VERSION = 1
ROOT_ENV = "ZFLOCK_LAB_ROOT"


class LabNotFound(ZflockError):
    """No state file for this lab: it is not up."""


def lab_root(root: Path | None = None) -> Path:
    """The directory holding state files and lab directories."""
    if root is not None:
        return root
    env = os.environ.get(ROOT_ENV)
    return Path(env) if env else DEFAULT_ROOT


@dataclass
class NodeState:
    name: str
    index: int
    netns: str
    address: str
    host_veth: str
    node_veth: str
    dir: Path
    pool_file: Path
    # Long-lived processes of this node by role, in start order. "zfs-fuse"
    # owns the node's mount namespace and is stopped last; other roles
    # ("sshd", later "agent") are stopped first, in reverse order.
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    # Namespace inodes, to find leftover processes inside the node on `down`.
    net_ns_inode: int | None = None
    mnt_ns_inode: int | None = None
    host_key_pub: str | None = None  # "ssh-ed25519 AAAA...", for known_hosts
    # ZFS backend (zflock.lab.backend) and this node's pool: "tank" on every
    # zfs-fuse node, a machine-wide unique name on kernel ZFS.
    backend: str = "fuse"
    pool: str = POOL_NAME

    @property
    def pool_root(self) -> str:
        """The dataset this node's agent keeps volumes under (`<pool>/zflock`)."""
        return self.pool + POOL_ROOT[len(POOL_NAME) :]

    @property
    def namespace_role(self) -> str:
        """The process role that owns this node's mount namespace ("zfs-fuse" or "holder")."""
        from zflock.lab.backend import NAMESPACE_ROLE

        return NAMESPACE_ROLE[self.backend]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "netns": self.netns,
            "address": self.address,
            "host_veth": self.host_veth,
            "node_veth": self.node_veth,
            "dir": str(self.dir),
            "pool_file": str(self.pool_file),
            "processes": {role: rec.to_json() for role, rec in self.processes.items()},
            "net_ns_inode": self.net_ns_inode,
            "mnt_ns_inode": self.mnt_ns_inode,
            "host_key_pub": self.host_key_pub,
            "backend": self.backend,
            "pool": self.pool,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeState:
        return cls(
            name=data["name"],
            index=int(data["index"]),
            netns=data["netns"],
            address=data["address"],
            host_veth=data["host_veth"],
            node_veth=data["node_veth"],
            dir=Path(data["dir"]),
            pool_file=Path(data["pool_file"]),
            processes={
                role: ProcessRecord.from_json(rec)
                for role, rec in data.get("processes", {}).items()
            },
            net_ns_inode=data.get("net_ns_inode"),
            mnt_ns_inode=data.get("mnt_ns_inode"),
            host_key_pub=data.get("host_key_pub"),
            backend=data.get("backend", "fuse"),
            pool=data.get("pool", POOL_NAME),
        )

    @property
    def zfs_fuse_dir(self) -> Path:
        return self.dir / "zfs-fuse"

    @property
    def mount_root_dir(self) -> Path:
        return self.dir / "mnt"

    @property
    def ssh_dir(self) -> Path:
        return self.dir / "ssh"

    @property
    def zfs_fuse_pid(self) -> int | None:
        """PID of the process owning the node's namespaces (zfs-fuse, or the native holder)."""
        rec = self.processes.get(self.namespace_role)
        return rec.pid if rec else None


@dataclass
class LabState:
    name: str
    subnet: str
    prefixlen: int
    host_address: str
    bridge: str
    dir: Path
    state_file: Path
    pool_size: int
    nodes: dict[str, NodeState]
    pool: str = POOL_NAME
    pool_root: str = POOL_ROOT
    mount_root: str = MOUNT_ROOT
    complete: bool = False  # set when `up` finished every step
    backend: str = "fuse"  # zflock.lab.backend: "fuse" or "native"
    arc_size: int | None = None  # zfs-fuse's ARC cap per node, bytes (None: its own)
    # Interfaces on the host that this lab created (bridge, host veth ends),
    # recorded before creation.
    links: list[str] = field(default_factory=list)
    # Network namespaces this lab created, recorded before creation.
    netns: list[str] = field(default_factory=list)
    version: int = STATE_VERSION

    @classmethod
    def from_plan(cls, plan: LabPlan, backend: str = "fuse") -> LabState:
        from zflock.lab.backend import node_pool_name

        return cls(
            backend=backend,
            name=plan.name,
            subnet=plan.subnet,
            prefixlen=plan.prefixlen,
            host_address=plan.host_address,
            bridge=plan.bridge,
            dir=plan.dir,
            state_file=plan.state_file,
            pool_size=plan.pool_size,
            nodes={
                n.name: NodeState(
                    name=n.name,
                    index=n.index,
                    netns=n.netns,
                    address=n.address,
                    host_veth=n.host_veth,
                    node_veth=n.node_veth,
                    dir=n.dir,
                    pool_file=n.pool_file,
                    backend=backend,
                    pool=node_pool_name(backend, plan.name, n.index),
                )
                for n in plan.nodes
            },
        )

    @property
    def operator_key(self) -> Path:
        """Private key of the lab's operator; every node authorizes its .pub for root."""
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """An ssh_config with a Host entry per node: `ssh -F FILE node2`."""
        return self.dir / "ssh_config"

    def node(self, name: str) -> NodeState:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes)
            raise UnknownNode(
                f"unknown node {name!r} in lab {self.name!r} (nodes: {known})"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "complete": self.complete,
            "backend": self.backend,
            "subnet": self.subnet,
            "prefixlen": self.prefixlen,
            "host_address": self.host_address,
            "bridge": self.bridge,
            "dir": str(self.dir),
            "state_file": str(self.state_file),
            "pool": self.pool,
            "pool_root": self.pool_root,
            "mount_root": self.mount_root,
            "pool_size": self.pool_size,
            "arc_size": self.arc_size,
            "operator_key": str(self.operator_key),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "links": list(self.links),
            "netns": list(self.netns),
            "nodes": {name: node.to_json() for name, node in self.nodes.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        if data.get("version") != STATE_VERSION:
            raise ZflockError(
                f"lab state file {data.get('state_file')} has version {data.get('version')!r}, "
                f"this zflock reads version {STATE_VERSION}"
            )
        return cls(
            version=data["version"],
            name=data["name"],
            complete=bool(data.get("complete", False)),
            backend=data.get("backend", "fuse"),
            subnet=data["subnet"],
            prefixlen=int(data["prefixlen"]),
            host_address=data["host_address"],
            bridge=data["bridge"],
            dir=Path(data["dir"]),
            state_file=Path(data["state_file"]),
            pool=data.get("pool", POOL_NAME),
            pool_root=data.get("pool_root", POOL_ROOT),
            mount_root=data.get("mount_root", MOUNT_ROOT),
            pool_size=int(data["pool_size"]),
            arc_size=None if data.get("arc_size") is None else int(data["arc_size"]),
            links=list(data.get("links", [])),
            netns=list(data.get("netns", [])),
            nodes={name: NodeState.from_json(n) for name, n in data["nodes"].items()},
        )


def save_state(state: LabState) -> None:
    """Write the state file atomically (temp file, fsync, rename)."""
    path = state.state_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(state.to_json(), indent=2, sort_keys=False) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def find_state(name: str, *, root: Path | None = None) -> LabState | None:
    """The recorded state of lab `name`, or None when it is not up."""
    path = state_file(lab_root(root), name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ZflockError(
            f"cannot read lab state {path}: permission denied (run as root)"
        ) from None
    try:
        return LabState.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ZflockError(
            f"lab state file {path} is unreadable ({exc}); remove the lab's resources by hand"
        ) from exc


def load_state(name: str, *, root: Path | None = None) -> LabState:
    """The recorded state of lab `name`; raises LabNotFound when it is not up."""
    state = find_state(name, root=root)
    if state is None:
        raise LabNotFound(f"lab {name!r} is not up (no {state_file(lab_root(root), name)})")
    return state


def all_states(*, root: Path | None = None) -> list[LabState]:
    """Every lab recorded under the root (unreadable files skipped)."""
    base = lab_root(root)
    states = []
    for path in sorted(base.glob("*.json")):
        try:
            states.append(LabState.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError, TypeError, ZflockError):
            continue
    return states
