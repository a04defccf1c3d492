"""What each Docker plugin call does, over the operations the CLI uses.

The plugin adds no way of changing volumes of its own: it sends the same
requests as `zflock ls | create | destroy | replicate | move` (rpc.messages)
to the agents, this one included, and keeps one thing the CLI has no use
for: who holds a volume mounted (Docker's Mount/Unmount IDs), stored on the
volume as `zflock:docker-mounts` so an agent restart keeps the count.

Following the container: a Mount on a node that is not the volume's primary
asks the primary's agent for a normal move here, unless a container holds
the volume there. A move that outlasts Docker's patience (~30 s) is answered
with an error and carries on; the next `docker start` finds the volume here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh

from zflock.agent.docker.model import (
    PROP_DOCKER_MOUNTS,
    CreateOptions,
    DockerError,
    Located,
    format_holders,
    in_use_error,
    locate,
    parse_holders,
    status,
    with_holder,
    without_holder,
)
from zflock.agent.locks import VolumeLocks
from zflock.agent.volumes import VolumeNotFound, Volumes
from zflock.cluster.config import AgentConfig, load_inventory
from zflock.errors import ZflockError
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.zfs import validate_component

log = logging.getLogger("zflock.agent.docker")


@dataclass
class _Arrival:
    """A Mount waiting for the volume to be moved here."""

    move: asyncio.Task[m.MoveReport]
    holders: set[str]


class DockerVolumes:
    def __init__(
        self,
        config: AgentConfig,
        volumes: Volumes,
        locks: VolumeLocks,
        peer_key: Callable[[], asyncssh.SSHKey | None],
    ) -> None:
        self.config = config
        self.volumes = volumes
        self.zfs = volumes.zfs
        self.locks = locks
        self._peer_key = peer_key
        self._arrivals: dict[str, _Arrival] = {}

    def _cluster(self) -> Cluster:
        key = self._peer_key()
        if key is None:
            raise DockerError("agent has no key to talk to its peers")
        return Cluster(load_inventory(self.config.cluster), key)

    async def _find(self, names: list[str], *, everyone: bool) -> dict[str, Located]:
        """The cluster's copies (`zflock ls`); `everyone`: refuse an answer with a node missing."""
        results = await self._cluster().call_all("list_volumes", m.ListVolumes(names=names))
        failed = [r for r in results if not r.ok]
        if failed and everyone:
            down = ", ".join(r.node for r in failed)
            raise DockerError(f"node(s) {down} unreachable ({failed[0].error}); retry")
        for r in failed:
            log.warning("docker: %s", r.error)
        return locate([copy for r in results if r.ok for copy in r.value.volumes])

    async def _located(self, name: str) -> Located:
        found = (await self._find([name], everyone=False)).get(name)
        if found is None:
            raise DockerError(f"volume {name} not found on any node")
        return found

    # -- mount holders ------------------------------------------------------------------

    async def _stored(self, name: str) -> list[str]:
        dataset = self.config.dataset(name)
        if not await self.zfs.exists(dataset):
            return []
        value = (await self.zfs.get(dataset, [PROP_DOCKER_MOUNTS]))[PROP_DOCKER_MOUNTS]
        return parse_holders(value, self.config.node)

    async def holders(self, name: str) -> list[str]:
        """This node's holders of `name`: from the volume, and Mounts moving it here."""
        held = await self._stored(name)
        arrival = self._arrivals.get(name)
        return held + sorted(arrival.holders - set(held)) if arrival else held

    async def _write_holders(self, name: str, holders: list[str]) -> None:
        dataset = self.config.dataset(name)
        if holders:
            await self.zfs.set(
                dataset, {PROP_DOCKER_MOUNTS: format_holders(holders, self.config.node)}
            )
        else:
            await self.zfs.inherit(dataset, PROP_DOCKER_MOUNTS)

    async def mounts_rpc(self, args: m.DockerMountsRequest, call: object) -> m.DockerMounts:
        """The `docker_mounts` operation: a peer's Mount asks before moving the volume away."""
        name = validate_component(args.name, "volume name")
        return m.DockerMounts(node=self.config.node, holders=await self.holders(name))

    # -- the calls ----------------------------------------------------------------------

    async def create(self, name: str, options: CreateOptions) -> None:
        found = await self._find([name], everyone=True)  # a name is unique in the cluster
        if name in found:
            where = found[name].primary or "no primary"
            log.info("docker: create %s: exists already (%s), using it", name, where,
                     extra={"volume": name})  # fmt: skip
            return
        inventory = load_inventory(self.config.cluster)
        for node in options.replicas:
            if node not in inventory.nodes:
                raise DockerError(f"replicas: unknown node {node!r}")
        cluster = self._cluster()
        here = self.config.node
        args = m.CreateVolume(name=name, quota=options.quota)
        try:
            await cluster.call(here, "create_volume", args)
        except ZflockError:
            # Another node's create of the same name may have won the race:
            # then that volume is the one Docker means (as if it had been first).
            if name in await self._find([name], everyone=False):
                log.info("docker: create %s: created elsewhere meanwhile, using it", name,
                         extra={"volume": name})  # fmt: skip
                return
            raise
        await self._replicas(cluster, name, options)

    async def _replicas(self, cluster: Cluster, name: str, options: CreateOptions) -> None:
        """`zflock replicate NAME --to NODES [--every E]`: the policy stored, then one sync each."""
        if not options.replicas:
            return
        async with cluster.client(self.config.node) as client:
            if options.every is not None:
                policy = m.SetPolicy(name=name, to=list(options.replicas), every=options.every)
                await client.call("set_policy", policy)
            for node in options.replicas:
                await client.call("replicate", m.Replicate(name=name, to=node))

    async def remove(self, name: str) -> None:
        """`docker volume rm`: `zflock destroy` without --node or --force, and no holder."""
        found = (await self._find([name], everyone=True)).get(name)
        if found is None:
            return  # nothing to remove: Docker forgets its record
        if found.primary is None:
            raise DockerError(
                f"no primary of {name} found ({'; '.join(found.problems)}); "
                "use `zflock destroy --force` to remove what is left"
            )
        cluster = self._cluster()
        for copy in found.copies:
            held: m.DockerMounts = await cluster.call(
                copy.node, "docker_mounts", m.DockerMountsRequest(name=name)
            )
            if held.holders:
                raise in_use_error(name, copy.node, held.holders)
        for copy in found.copies:  # primary first: locate() sorts it first
            force = copy.node != found.primary
            await cluster.call(copy.node, "destroy_volume", m.DestroyVolume(name=name, force=force))

    async def mount(self, name: str, ident: str) -> str:
        deadline = time.monotonic() + self.config.docker_mount_timeout
        if not await self._primary_here(name):
            await self._bring_here(name, ident, deadline)
        return await self._hold(name, ident, deadline)

    async def unmount(self, name: str, ident: str) -> None:
        deadline = time.monotonic() + self.config.docker_mount_timeout
        arrival = self._arrivals.get(name)
        if arrival is not None:
            arrival.holders.discard(ident)  # a Mount that failed: Docker cleans up after it
        if ident not in await self._stored(name):
            # Never counted here (a refused Mount), or the volume is gone: no lock
            # taken, so a replica's receive running now is never disturbed.
            return
        await self._with_lock(name, "docker unmount", deadline)
        try:
            held = await self._stored(name)
            if ident in held:
                await self._write_holders(name, without_holder(held, ident))
        finally:
            self.locks.release(name)

    async def path(self, name: str) -> str:
        return self.config.mountpoint(name) if await self._primary_here(name) else ""

    async def get(self, name: str) -> dict[str, Any]:
        found = await self._located(name)
        return await self._describe(found)

    async def list(self) -> list[dict[str, Any]]:
        found = await self._find([], everyone=False)
        return [await self._describe(v) for v in found.values()]

    async def _describe(self, found: Located) -> dict[str, Any]:
        here = found.primary == self.config.node
        held = await self.holders(found.name) if here else []
        return {
            "Name": found.name,
            "Mountpoint": self.config.mountpoint(found.name) if here else "",
            "Status": status(found, held),
        }

    # -- following the container --------------------------------------------------------

    async def _primary_here(self, name: str) -> bool:
        try:
            copy = await self.volumes.get(name)
        except VolumeNotFound:
            return False
        return copy.role == "primary" and not copy.readonly and not copy.move

    async def _bring_here(self, name: str, ident: str, deadline: float) -> None:
        arrival = self._arrivals.get(name)
        if arrival is None:
            found = await self._located(name)
            if found.primary is None:
                raise DockerError(f"volume {name} has no primary: {'; '.join(found.problems)}")
            if found.primary == self.config.node:  # fenced here: a move away is under way
                raise DockerError(f"volume {name} is being moved from {found.primary}; retry")
            cluster = self._cluster()
            held: m.DockerMounts = await cluster.call(
                found.primary, "docker_mounts", m.DockerMountsRequest(name=name)
            )
            if held.holders:
                raise in_use_error(name, found.primary, held.holders)
            arrival = self._start_move(cluster, name, found.primary)
        arrival.holders.add(ident)
        try:
            await asyncio.wait_for(asyncio.shield(arrival.move), deadline - time.monotonic())
        except TimeoutError:
            arrival.holders.discard(ident)  # Docker has given up on this call
            raise DockerError(
                f"moving {name} to {self.config.node} takes longer than "
                f"{self.config.docker_mount_timeout:g} s; it goes on in the background: start "
                "the container again when `zflock ls` shows it here"
            ) from None
        except ZflockError as exc:
            arrival.holders.discard(ident)
            raise DockerError(f"cannot move {name} to {self.config.node}: {exc}") from None

    def _start_move(self, cluster: Cluster, name: str, source: str) -> _Arrival:
        here = self.config.node
        log.info("docker: mount of %s here: moving it from %s", name, source,
                 extra={"volume": name})  # fmt: skip
        # The same request as `zflock move NAME --to HERE`, without hooks: the
        # container on the source has stopped (it holds no mount there). It waits
        # behind a replication of the volume running there (the Mount does not:
        # it answers at its deadline and the move goes on).
        move = asyncio.get_running_loop().create_task(
            cluster.call(source, "move", m.Move(name=name, to=here, wait=True))
        )
        arrival = _Arrival(move=move, holders=set())
        self._arrivals[name] = arrival

        def done(task: asyncio.Task[m.MoveReport]) -> None:
            # A waiting Mount keeps the arrival until it has written its holder,
            # so that the old primary never sees the volume here unheld.
            if task.cancelled() or task.exception() is not None or not arrival.holders:
                self._forget(name, arrival)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.warning("docker: moving %s from %s failed: %s", name, source, exc,
                            extra={"volume": name})  # fmt: skip
                return
            report = task.result()
            log.info(
                "docker: moved %s %s -> %s for a container: downtime %.3f s, total %.3f s "
                "(epoch %d)", name, source, here, report.downtime_s, report.total_s,
                report.epoch, extra={"volume": name},
            )  # fmt: skip

        move.add_done_callback(done)
        return arrival

    def _forget(self, name: str, arrival: _Arrival) -> None:
        if self._arrivals.get(name) is arrival:
            del self._arrivals[name]

    async def _with_lock(self, name: str, what: str, deadline: float) -> None:
        try:
            await asyncio.wait_for(
                self.locks.acquire(name, what, wait=True), max(0.1, deadline - time.monotonic())
            )
        except TimeoutError:
            holder = self.locks.holder(name) or "another operation"
            raise DockerError(f"volume {name} is busy ({holder}); retry") from None

    async def _hold(self, name: str, ident: str, deadline: float) -> str:
        """Count `ident` as a holder of the primary here, and hand Docker its mountpoint."""
        await self._with_lock(name, "docker mount", deadline)
        try:
            # Checked again under the lock: a move may have taken it away meanwhile.
            copy = await self.volumes.get(name)
            if copy.role != "primary" or copy.readonly or copy.move:
                raise DockerError(
                    f"volume {name} is not writable on {self.config.node} "
                    f"({copy.role}{', a move is in progress' if copy.move else ''}); retry"
                )
            dataset = self.config.dataset(name)
            if not copy.mounted:
                await self.zfs.mount(dataset)
            await self._write_holders(name, with_holder(await self._stored(name), ident))
            arrival = self._arrivals.get(name)
            if arrival is not None:
                arrival.holders.discard(ident)
                if arrival.move.done() and not arrival.holders:
                    self._forget(name, arrival)
        finally:
            self.locks.release(name)
        return self.config.mountpoint(name)
