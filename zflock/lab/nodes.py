"""Entering a lab node: argv prefixes and zflock.zfs clients for a node."""

from __future__ import annotations

from zflock.errors import ZflockError
from zflock.lab.state import LabState
from zflock.zfs import Runner, Zfs


class NodeDown(ZflockError):
    """The process owning the node's namespaces (zfs-fuse or the holder) is not running."""


def node_prefix(state: LabState, node: str) -> list[str]:
    """argv prefix that runs a command inside `node`: its network and mount namespace.

    Both namespaces are taken from the node's zfs-fuse daemon, which owns the
    node's private mount namespace (its /var/run/zfs, /zflock, ZFS mounts), or
    on kernel ZFS from the node's holder process (zflock.lab.backend).
    """
    from zflock.lab import procs

    n = state.node(node)
    rec = n.processes.get(n.namespace_role)
    if rec is None or not procs.is_running(rec):
        raise NodeDown(
            f"node {node!r} of lab {state.name!r} is down (its {n.namespace_role} is not "
            "running); "
            f"run `zflock lab down --name {state.name}` and `zflock lab up` again"
        )
    return [
        "nsenter",
        f"--net=/proc/{rec.pid}/ns/net",
        f"--mount=/proc/{rec.pid}/ns/mnt",
        "--",
    ]


def node_zfs(state: LabState, node: str) -> Zfs:
    """A zflock.zfs client that runs zfs/zpool inside `node`."""
    return Zfs(Runner(tuple(node_prefix(state, node))))


def ssh_argv(state: LabState, node: str, *command: str) -> list[str]:
    """argv for OpenSSH from the host (or from inside another node) to `node` as root."""
    n = state.node(node)
    return ["ssh", "-F", str(state.ssh_config), n.name, *command]
