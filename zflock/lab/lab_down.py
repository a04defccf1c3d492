"""`lab down`: remove everything a lab's state file records, tolerating what is gone.

All nodes at once, step by step: stop the recorded processes other than
zfs-fuse (the agent, sshd: latest role first), kill whatever else still runs
inside a node's namespaces (ssh sessions, `lab exec` commands: found by
namespace membership, never by name), export each pool (through zflock.zfs),
stop each zfs-fuse (its private mount namespace, with every mount of the
node, goes with it), delete the network namespaces and the veth pairs. Then
the bridge, the lab directory (pool files, keys, logs) and last the state
file, so that an interrupted `down` can simply be run again.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from zflock.errors import ZflockError
from zflock.lab import net, procs
from zflock.lab.aio import run_sync
from zflock.lab.lock import lab_lock
from zflock.lab.plan import DEFAULT_LAB_NAME, validate_lab_name
from zflock.lab.preflight import LabPrerequisiteMissing, check_root
from zflock.lab.state import LabState, NodeState, find_state, lab_root


class LabTeardownIncomplete(ZflockError):
    """Some of the lab's resources could not be removed; the state file is kept."""


def down(name: str = DEFAULT_LAB_NAME, *, root: Path | None = None) -> bool:
    """Take lab `name` down. Returns False when there was nothing to do."""
    validate_lab_name(name)
    if problem := check_root():
        raise LabPrerequisiteMissing(problem)
    with lab_lock():
        state = find_state(name, root=root)
        if state is None:
            return False
        teardown(state)
        remove_empty_root(lab_root(root))
        return True


def teardown(state: LabState) -> None:
    """Remove every resource recorded in `state`; raise if any remains."""
    errors: list[str] = []
    _stop_side_processes(state, errors)
    for node in state.nodes.values():
        _kill_node_members(node, errors)
    exported = run_sync(_export_pools(state))
    _stop_daemons(state, exported)
    _destroy_kernel_pools(state, errors)
    for netns in state.netns:
        try:
            net.del_netns(netns)
        except ZflockError as exc:
            errors.append(str(exc))
    for link in reversed(state.links):
        try:
            net.del_link(link)
        except ZflockError as exc:
            errors.append(str(exc))
    leftovers = _leftovers(state)
    if leftovers or errors:
        raise LabTeardownIncomplete(
            f"lab {state.name!r} not completely removed ({'; '.join(errors + leftovers)}); "
            f"state kept in {state.state_file}, run `zflock lab down --name {state.name}` again"
        )
    _remove_dir(state.dir, state)
    state.state_file.unlink(missing_ok=True)


def _stop_side_processes(state: LabState, errors: list[str]) -> None:
    """Stop every recorded process except the namespace owner (zfs-fuse or holder),
    latest role first, all nodes at once."""
    roles: list[str] = []
    for node in state.nodes.values():
        roles += [r for r in node.processes if r != node.namespace_role and r not in roles]
    for role in reversed(roles):
        recs = [n.processes[role] for n in state.nodes.values() if role in n.processes]
        procs.stop_all(recs)
        for node in state.nodes.values():
            rec = node.processes.get(role)
            if rec is not None and procs.is_running(rec):
                errors.append(f"{node.name}: {role} (pid {rec.pid}) did not stop")


async def _export_pools(state: LabState) -> set[str]:
    """Export each node's pool while its daemon runs; return the nodes that did."""
    from zflock.lab.nodes import node_zfs

    async def one(node: NodeState) -> bool:
        rec = node.processes.get(node.namespace_role)
        if rec is None or not procs.is_running(rec):
            return False
        try:
            # Inside the node: its datasets are mounted in its mount namespace only.
            zfs = node_zfs(state, node.name)
            if any(p.name == node.pool for p in await zfs.list_pools()):
                await zfs.export_pool(node.pool)
            return True
        except ZflockError:
            # The daemon is stopped next and the pool file deleted: a failed
            # export costs nothing but a clean close, so it is not fatal.
            return False

    nodes = list(state.nodes.values())
    done = await asyncio.gather(*(one(n) for n in nodes))
    return {n.name for n, ok in zip(nodes, done, strict=True) if ok}


def _stop_daemons(state: LabState, exported: set[str]) -> None:
    """Stop every node's zfs-fuse at once.

    zfs-fuse needs about 4 s to exit on SIGTERM once it has served a
    command. With its pool exported it holds nothing worth waiting for, so it
    gets a short grace before SIGKILL; otherwise the full grace, to let it
    close the pool itself.
    """
    owners = [n for n in state.nodes.values() if n.namespace_role in n.processes]
    recs = [n.processes[n.namespace_role] for n in owners]
    all_exported = all(n.name in exported for n in owners)
    procs.stop_all(recs, timeout=1.0 if all_exported else 15.0)


def _kill_node_members(node: NodeState, errors: list[str]) -> None:
    """Kill what else runs inside the node: ssh sessions, `lab exec` commands.

    Found by membership of the node's namespaces, by the inodes recorded at
    creation, and only while those are pinned to this lab (the netns by its
    /run/netns name, the mount namespace by the running zfs-fuse): a freed
    namespace's inode number can be handed to somebody else's new namespace.
    Runs before the pool export, which open files or working directories
    of these processes would make fail with "busy".
    """
    nets: list[int] = []
    if node.net_ns_inode is not None and node.net_ns_inode == procs.namespace_inode(
        net.NETNS_DIR / node.netns
    ):
        nets.append(node.net_ns_inode)
    mnts: list[int] = []
    zfs_fuse = node.processes.get(node.namespace_role)
    spare = set()
    if zfs_fuse is not None and procs.is_running(zfs_fuse):
        spare.add(zfs_fuse.pid)
        inode = node.mnt_ns_inode
        if inode is not None and inode == procs.namespace_inode(f"/proc/{zfs_fuse.pid}/ns/mnt"):
            mnts.append(inode)
    if not nets and not mnts:
        return
    procs.kill_namespace_members(net=nets, mnt=mnts, spare=spare)
    rest = [p for p in procs.pids_in_namespaces(net=nets, mnt=mnts) if p not in spare]
    if rest:
        # Our own process may be inside the node (a `lab down` run through
        # `lab exec`): reported, never killed.
        errors.append(f"{node.name}: processes {rest} still inside the node")


def _kernel_pools(state: LabState) -> list[str]:
    """The lab's kernel ZFS pools still imported (none for zfs-fuse labs)."""
    if state.backend != "native":
        return []
    done = subprocess.run(
        ["zpool", "list", "-H", "-o", "name"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=60,
    )
    imported = set(done.stdout.split())
    return [n.pool for n in state.nodes.values() if n.pool in imported]


def _destroy_kernel_pools(state: LabState, errors: list[str]) -> None:
    """Destroy what the export left of the lab's kernel pools (their nodes are gone,
    and with them the only mount namespaces where their datasets were mounted)."""
    for pool in _kernel_pools(state):
        done = subprocess.run(
            ["zpool", "destroy", "-f", pool],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            errors.append(f"pool {pool}: zpool destroy failed: {done.stderr.strip()}")


def _leftovers(state: LabState) -> list[str]:
    found = [f"network namespace {n}" for n in state.netns if net.netns_exists(n)]
    found += [f"kernel pool {p}" for p in _kernel_pools(state)]
    found += [f"interface {link}" for link in state.links if net.link_exists(link)]
    for node in state.nodes.values():
        for role, rec in node.processes.items():
            if procs.is_running(rec):
                found.append(f"{node.name}: {role} pid {rec.pid}")
    return found


def _remove_dir(path: Path, state: LabState) -> None:
    # Only ever the lab's own directory: <root>/<lab>, named after the lab.
    if path.name != state.name or path == path.parent:
        raise LabTeardownIncomplete(f"refusing to remove {path}: not a lab directory")
    if path.exists():
        shutil.rmtree(path)


def remove_empty_root(root: Path) -> None:
    try:
        root.rmdir()  # only succeeds when no other lab is recorded there
    except OSError:
        pass
