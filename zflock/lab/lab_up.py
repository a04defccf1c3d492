"""`lab up`: build the lab from its plan, recording each step in the state file.

Order: validate and preflight (nothing created on failure), plan, then per
lab the bridge, per node a network namespace and veth pair, a zfs-fuse daemon
in a private mount namespace, the pool `tank` in a sparse file with the
dataset `tank/zflock` mounted at /zflock, and sshd. On kernel ZFS (backend
"native", zflock.lab.backend) a holder process owns each node's mount
namespace instead of zfs-fuse, and each node's pool has its own name
(`zl<lab>n<index>`, dataset `<pool>/zflock`). If any step fails, what
was made so far is torn down before the error is raised; if the process dies
instead, the state file lets `lab down` finish the job.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from zflock.errors import UsageError, ZflockError
from zflock.lab import net, procs, sshd
from zflock.lab.aio import run_sync
from zflock.lab.backend import FUSE, lab_backend, start_holder
from zflock.lab.health import decide_up, inspect
from zflock.lab.lab_down import remove_empty_root, teardown
from zflock.lab.lock import lab_lock
from zflock.lab.nodes import node_zfs
from zflock.lab.plan import (
    DEFAULT_LAB_NAME,
    DEFAULT_POOL_SIZE,
    MIN_POOL_SIZE,
    LabPlan,
    plan_lab,
    validate_lab_name,
    validate_node_count,
)
from zflock.lab.preflight import preflight
from zflock.lab.state import LabState, NodeState, all_states, find_state, lab_root, save_state
from zflock.lab.zfsfuse import start_zfs_fuse

Progress = Callable[[str], None]


class LabBroken(ZflockError):
    """A lab with this name exists but is not (completely) running."""


class LabConflict(ZflockError):
    """Something the lab would create already exists on the machine."""


def _quiet(_: str) -> None:
    pass


def up(
    name: str = DEFAULT_LAB_NAME,
    nodes: int = 3,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    root: Path | None = None,
    progress: Progress = _quiet,
    zfs: str | None = None,
    arc_size: int | None = None,
) -> LabState:
    """Bring lab `name` up with `nodes` nodes, or return it if it is already up.

    Idempotent: a lab that is up with the same node count is returned as is.
    A lab that is up with another node count, or partly broken, raises (take
    it down first): `up` never destroys pools on its own. `zfs` picks the
    backend ("fuse" or "native"; default $ZFLOCK_LAB_ZFS, else "fuse"). `arc_size` caps
    each zfs-fuse daemon's ARC (bytes; None: zfs-fuse's own default).
    """
    backend = lab_backend(zfs)
    validate_lab_name(name)
    validate_node_count(nodes)
    if pool_size < MIN_POOL_SIZE:
        raise UsageError(f"invalid pool size {pool_size}: at least {MIN_POOL_SIZE >> 20} MiB")
    if arc_size is not None:
        validate_arc_size(arc_size, backend)
    preflight(backend)
    root = lab_root(root)
    with lab_lock():
        existing = find_state(name, root=root)
        if existing is not None:
            return _existing(existing, nodes)
        plan = _plan(name, nodes, root=root, pool_size=pool_size)
        state = LabState.from_plan(plan, backend)
        state.arc_size = arc_size
        _check_conflicts(plan, state)
        save_state(state)
        try:
            _build(state, progress)
        except BaseException:
            # Leave nothing half-built behind; keep the state file only if
            # teardown itself could not remove everything.
            progress("failed; removing what was created")
            try:
                teardown(state)
                remove_empty_root(root)
            except ZflockError as exc:
                progress(f"cleanup incomplete: {exc}")
            raise
        state.complete = True
        save_state(state)
        return state


def validate_arc_size(arc_size: int, backend: str, given: str | None = None) -> None:
    """zfs-fuse takes 16 MiB to 16 GiB (`--max-arc-size`, whole MiB); kernel ZFS's ARC
    is the host's, not the lab's."""
    if backend != FUSE:
        raise UsageError("--arc-size is for zfs-fuse labs; kernel ZFS's ARC is the host's")
    if not 16 << 20 <= arc_size <= 16 << 30:
        shown = repr(given) if given is not None else f"{arc_size} bytes"
        raise UsageError(f"invalid ARC size {shown}: between 16M and 16G")


def _existing(state: LabState, nodes: int) -> LabState:
    health = inspect(state)
    action = decide_up(health, nodes)
    if action == "reuse":
        return state
    if action == "resize":
        raise LabBroken(
            f"lab {state.name!r} is already up with {len(state.nodes)} nodes, not {nodes}; "
            f"run `zflock lab down --name {state.name}` first to rebuild it"
        )
    raise LabBroken(
        f"lab {state.name!r} is only partly up ({'; '.join(health.problems)}); "
        f"run `zflock lab down --name {state.name}` and then `zflock lab up` again"
    )


def _plan(name: str, nodes: int, *, root: Path, pool_size: int) -> LabPlan:
    taken = set(net.used_lab_octets())
    for other in all_states(root=root):
        taken.add(int(other.subnet.split(".")[2]))
    return plan_lab(name, nodes, root=root, taken_subnets=taken, pool_size=pool_size)


def _check_conflicts(plan: LabPlan, state: LabState) -> None:
    """Refuse to start over leftovers we did not record (they are not ours to delete)."""
    clashes = [f"interface {plan.bridge}"] if net.link_exists(plan.bridge) else []
    if state.backend != FUSE:
        imported = set(
            subprocess.run(
                ["zpool", "list", "-H", "-o", "name"],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
                timeout=60,
            ).stdout.split()
        )
        clashes += [f"pool {n.pool}" for n in state.nodes.values() if n.pool in imported]
    for node in plan.nodes:
        if net.netns_exists(node.netns):
            clashes.append(f"network namespace {node.netns}")
        if net.link_exists(node.host_veth):
            clashes.append(f"interface {node.host_veth}")
    if plan.dir.exists():
        clashes.append(f"directory {plan.dir}")
    if clashes:
        raise LabConflict(
            f"cannot build lab {plan.name!r}: {', '.join(clashes)} already exist(s) "
            "but no state file records them; remove them by hand or pick another --name"
        )


def _build(state: LabState, progress: Progress) -> None:
    state.dir.mkdir(parents=True, exist_ok=False)
    os.chmod(state.dir, 0o700)
    sshd.generate_key(state.operator_key, f"zflock-lab-{state.name}-operator")

    progress(f"network: bridge {state.bridge} {state.host_address}/{state.prefixlen}")
    state.links.append(state.bridge)
    save_state(state)
    net.add_bridge(state.bridge, state.host_address, state.prefixlen)
    for node in state.nodes.values():
        state.netns.append(node.netns)
        state.links.append(node.host_veth)
        save_state(state)
        net.add_netns(node.netns)
        node.net_ns_inode = procs.namespace_inode(net.NETNS_DIR / node.netns)
        net.add_node_link(
            bridge=state.bridge,
            host_veth=node.host_veth,
            netns=node.netns,
            node_veth=node.node_veth,
            address=node.address,
            prefixlen=state.prefixlen,
        )
    save_state(state)

    if state.backend == FUSE:
        progress(f"zfs-fuse: starting {len(state.nodes)} daemons")
        _start_daemons(state)
    else:
        progress(f"kernel ZFS: starting {len(state.nodes)} namespace holders")
        _start_holders(state)
    pools = ", ".join(sorted({n.pool for n in state.nodes.values()}))
    progress(f"pools: {pools} ({state.pool_size >> 20} MiB sparse) on every node")
    for node in state.nodes.values():
        # A sparse file: 1 GiB of pool costs no disk until written.
        with open(node.pool_file, "wb") as f:
            f.truncate(state.pool_size)
    run_sync(_create_pools(state))
    progress("sshd: starting on every node")
    _start_sshds(state)
    _write_client_files(state)
    save_state(state)
    progress("agents: configuring keys and inventory, starting `zflock agent` on every node")
    # Imported here: agents.py imports cluster config, which the node
    # start-up path (nodeinit) must not pay for.
    from zflock.lab import agents

    try:
        agents.start_all(state)
    finally:
        save_state(state)  # record every agent PID that started


def _start_daemons(state: LabState) -> None:
    """Start each node's zfs-fuse; in parallel, as most of the time is waiting."""

    def start(node: NodeState) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        daemon = start_zfs_fuse(
            node.zfs_fuse_dir,
            netns=node.netns,
            # The agent mounts volumes under /zflock: give each node its own,
            # so nothing a node mounts or writes there reaches the host.
            extra_binds=((node.mount_root_dir, state.mount_root),),
            max_arc_mb=None if state.arc_size is None else state.arc_size >> 20,
        )
        node.processes["zfs-fuse"] = procs.record(daemon.pid)
        node.mnt_ns_inode = procs.namespace_inode(f"/proc/{daemon.pid}/ns/mnt")

    with ThreadPoolExecutor(max_workers=len(state.nodes)) as pool:
        futures = [pool.submit(start, node) for node in state.nodes.values()]
        errors = []
        for fut in futures:
            try:
                fut.result()
            except Exception as exc:
                errors.append(exc)
    save_state(state)  # record every PID that did start before raising
    if errors:
        raise errors[0]


def _start_holders(state: LabState) -> None:
    """Start each node's namespace holder (kernel ZFS has no per-node daemon)."""
    for node in state.nodes.values():
        node.dir.mkdir(parents=True, exist_ok=True)
        # Recorded under its role before anything else can fail.
        pid = start_holder(
            node.dir / "holder",
            netns=node.netns,
            extra_binds=((node.mount_root_dir, state.mount_root),),
        )
        node.processes[node.namespace_role] = procs.record(pid)
        node.mnt_ns_inode = procs.namespace_inode(f"/proc/{pid}/ns/mnt")
        save_state(state)


async def _create_pools(state: LabState) -> None:
    async def one(node: NodeState) -> None:
        zfs = node_zfs(state, node.name)
        # The pool itself is not mounted (mountpoint none): a pool mountpoint
        # such as /tank would be created as a directory in the host's root
        # filesystem, which the node shares.
        await zfs.create_pool(node.pool, str(node.pool_file), mountpoint="none")
        await zfs.create(node.pool_root, {"mountpoint": state.mount_root})

    await asyncio.gather(*(one(n) for n in state.nodes.values()))


def _start_sshds(state: LabState) -> None:
    authorized = state.operator_key.with_name(state.operator_key.name + ".pub")
    for node in state.nodes.values():
        node.ssh_dir.mkdir(parents=True, exist_ok=True)
        host_key = node.ssh_dir / "ssh_host_ed25519_key"
        node.host_key_pub = sshd.generate_key(host_key, f"zflock-lab-{state.name}-{node.name}")
        config = node.ssh_dir / "sshd_config"
        config.write_text(
            sshd.render_sshd_config(
                address=node.address,
                host_key=host_key,
                authorized_keys=authorized,
                pid_file=node.ssh_dir / "sshd.pid",
            )
        )
        _check_sshd_config(config)
    # Start them all, then wait: sshd start-up is mostly waiting.
    with ThreadPoolExecutor(max_workers=len(state.nodes)) as pool:
        futures = {
            node.name: pool.submit(
                sshd.start_sshd,
                prefix=_prefix(state, node),
                config=node.ssh_dir / "sshd_config",
                log=node.ssh_dir / "sshd.log",
                address=node.address,
            )
            for node in state.nodes.values()
        }
        errors = []
        for name, fut in futures.items():
            try:
                state.nodes[name].processes["sshd"] = fut.result()
            except Exception as exc:
                errors.append(exc)
    save_state(state)
    if errors:
        raise errors[0]


def _prefix(state: LabState, node: NodeState) -> list[str]:
    from zflock.lab.nodes import node_prefix

    return node_prefix(state, node.name)


def _check_sshd_config(config: Path) -> None:
    sshd.ensure_privsep_dir()
    proc = subprocess.run(
        [sshd.SSHD, "-t", "-f", str(config)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise sshd.LabSshError(f"generated {config} is invalid: {proc.stderr.strip()}")


def _write_client_files(state: LabState) -> None:
    state.known_hosts.write_text(
        sshd.known_hosts_lines(
            (n.address, n.host_key_pub) for n in state.nodes.values() if n.host_key_pub
        )
    )
    state.ssh_config.write_text(
        sshd.render_ssh_config(
            nodes=((n.name, n.address) for n in state.nodes.values()),
            identity=state.operator_key,
            known_hosts=state.known_hosts,
        )
    )
