"""Is a recorded lab up and well? Gathering (I/O) and judging (pure) kept apart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from zflock.lab import net, procs
from zflock.lab.aio import run_sync
from zflock.lab.state import LabState
from zflock.zfs import PoolInfo


@dataclass(frozen=True)
class NodeHealth:
    name: str
    netns: str
    address: str
    netns_present: bool
    # role -> alive, in start order ("zfs-fuse", "sshd", later "agent", ...)
    processes: dict[str, bool] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pool: PoolInfo | None = None
    pool_error: str | None = None
    namespace_role: str = "zfs-fuse"  # "holder" on kernel ZFS (zflock.lab.backend)

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.netns_present:
            found.append(f"{self.name}: network namespace {self.netns} is missing")
        for role in (self.namespace_role, "sshd"):
            if role not in self.processes:
                found.append(f"{self.name}: {role} was never started")
        for role, alive in self.processes.items():
            if not alive:
                found.append(f"{self.name}: {role} (pid {self.pids.get(role)}) is not running")
        if self.pool_error:
            found.append(f"{self.name}: pool: {self.pool_error}")
        elif self.pool is not None and self.pool.health != "ONLINE":
            found.append(f"{self.name}: pool {self.pool.name} is {self.pool.health}")
        return found


@dataclass(frozen=True)
class LabHealth:
    name: str
    complete: bool
    bridge_present: bool
    nodes: tuple[NodeHealth, ...]

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.complete:
            found.append("`lab up` did not finish")
        if not self.bridge_present:
            found.append("the lab bridge is missing")
        for node in self.nodes:
            found += node.problems
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems


UpAction = Literal["reuse", "resize", "broken"]


def decide_up(health: LabHealth, nodes: int) -> UpAction:
    """What `lab up` does when the lab already has a state file.

    - reuse: everything recorded is alive and the node count matches: print it.
    - resize: alive, but a different --nodes was asked for: refuse, the
      operator has to take it down first (we never destroy pools implicitly).
    - broken: something recorded is gone: refuse and point at `lab down`.
    """
    if not health.healthy:
        return "broken"
    if len(health.nodes) != nodes:
        return "resize"
    return "reuse"


async def _pool_infos(state: LabState, alive: dict[str, bool]) -> dict[str, PoolInfo | str]:
    from zflock.lab.nodes import node_zfs

    async def one(node: str) -> PoolInfo | str:
        if not alive[node]:
            return f"{state.nodes[node].namespace_role} is not running"
        try:
            return await node_zfs(state, node).pool_info(state.nodes[node].pool)
        except Exception as exc:  # reported per node, never fatal for `status`
            return str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)

    names = list(state.nodes)
    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))


def inspect(state: LabState, *, pools: bool = True) -> LabHealth:
    """Look at every recorded resource of the lab (and each node's pool if `pools`)."""
    alive_zfs: dict[str, bool] = {}
    per_node: dict[str, tuple[dict[str, bool], dict[str, int]]] = {}
    for name, node in state.nodes.items():
        alive = {role: procs.is_running(rec) for role, rec in node.processes.items()}
        pids = {role: rec.pid for role, rec in node.processes.items()}
        per_node[name] = (alive, pids)
        alive_zfs[name] = alive.get(node.namespace_role, False)
    infos = run_sync(_pool_infos(state, alive_zfs)) if pools else {}
    nodes = []
    for name, node in state.nodes.items():
        alive, pids = per_node[name]
        info = infos.get(name)
        nodes.append(
            NodeHealth(
                name=name,
                netns=node.netns,
                address=node.address,
                netns_present=net.netns_exists(node.netns),
                processes=alive,
                pids=pids,
                pool=info if isinstance(info, PoolInfo) else None,
                pool_error=info if isinstance(info, str) else None,
                namespace_role=node.namespace_role,
            )
        )
    return LabHealth(
        name=state.name,
        complete=state.complete,
        bridge_present=net.link_exists(state.bridge),
        nodes=tuple(nodes),
    )
