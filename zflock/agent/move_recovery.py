"""Interrupted moves, on their source: finish or undo them, now or in the background.

A move cut short leaves its marker on the source (move/marker.py). This module
asks what became of it (the destination, then every other node's epoch) and lets
zflock.move.source_steps.recover_move act on the answer, under the volume's lock; while
nothing can be learnt it retries in the background, the source staying fenced.
"""

from __future__ import annotations

import asyncio
import logging

from zflock.agent.hooks import HookFailed
from zflock.agent.move_site import MoveSite
from zflock.agent.observing import copies_listed
from zflock.cluster.config import NodeEntry, load_inventory
from zflock.cluster.ownership import Ownership
from zflock.errors import ZflockError
from zflock.move.marker import Marker
from zflock.move.recovery import WAIT, Recovery
from zflock.move.source_steps import recover_move
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.rpc.move_peer import RemoteDestination

log = logging.getLogger("zflock.agent.moves")
RECOVERY_RETRY_MAX = 30.0
# How long recovery waits for each other node's list of copies (their epochs).
PEER_EPOCH_SECONDS = 10.0


def highest_epoch(answers: list[m.VolumeList | None], volume_id: str) -> int:
    """The highest epoch of the volume `volume_id` in the nodes' answers (None: no answer,
    which counts for nothing); 0 when no node holds a copy of it."""
    return max(
        (c.epoch for a in answers if a is not None for c in a.volumes if c.id == volume_id),
        default=0,
    )


class MoveRecovery:
    def __init__(self, site: MoveSite) -> None:
        self.site = site
        self.background: set[asyncio.Task[None]] = set()

    async def recover(self, name: str, ownership: Ownership, marker: Marker) -> Recovery:
        """Finish or undo the interrupted move `marker` describes (volume lock held)."""
        site = self.site
        config = site.config
        context = site.context(name, config.node, marker.destination, marker.new_epoch)
        source = site.source(name, context, {})
        try:
            peer: NodeEntry | None = load_inventory(config.cluster).node(marker.destination)
        except ZflockError:
            peer = None  # not in the inventory any more: it cannot be asked
        destination = None
        if peer is not None:
            destination = RemoteDestination(
                None, None, peer, self.site.links.key(), name, ownership.id, marker.new_epoch,
                resolve_timeout=config.deadlines.resolve,
            )  # fmt: skip

        async def peers() -> int:
            return await self.peer_epoch(name, ownership.id, marker.destination)

        done = await recover_move(
            name, marker, ownership.role, ownership.epoch, source, destination, peers
        )
        level = logging.INFO if done.action != WAIT else logging.WARNING
        log.log(level, "interrupted move %s: %s (%s)", marker.format(), done.action, done.reason,
                extra={"volume": name})  # fmt: skip
        return done

    async def peer_epoch(self, name: str, volume_id: str, destination: str) -> int:
        """The highest epoch of this volume (by id) that the nodes other than this one
        and the move's destination (which answers for itself) report; those that cannot
        be reached within PEER_EPOCH_SECONDS count for nothing."""
        config = self.site.config
        inventory = load_inventory(config.cluster)
        others = [n for n in inventory.nodes if n not in (config.node, destination)]
        cluster = Cluster(inventory, self.site.links.key(), timeout=PEER_EPOCH_SECONDS)
        results = await cluster.call_all(
            "list_volumes", m.ListVolumes(names=[name]), others, deadline=PEER_EPOCH_SECONDS
        )
        return highest_epoch([r.value if r.ok else None for r in results], volume_id)

    def spawn(self, name: str) -> None:
        """Keep at the interrupted move of `name` in the background until it is settled."""
        task = asyncio.get_running_loop().create_task(self._loop(name))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _loop(self, name: str) -> None:
        site = self.site
        delay = 1.0
        while True:
            try:
                async with site.locks.hold(name, "recover move", wait=True):
                    ownership = await site.volumes.ownership(name)
                    marker = await site.marker(name)
                    if marker is None:
                        return
                    if (await self.recover(name, ownership, marker)).action != WAIT:
                        return
            except (ZflockError, HookFailed) as exc:
                log.warning("recovering a move: %s; retrying", exc, extra={"volume": name})
            except Exception:
                # A background task that died would leave the source fenced for good.
                log.exception("recovering a move failed unexpectedly; retrying",
                              extra={"volume": name})  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECOVERY_RETRY_MAX)

    async def recover_all(self) -> None:
        """At start: finish or undo every move this node's copies say was interrupted."""
        copies = await self.site.volumes.list()
        self.site.links.observer.emit(copies_listed(copies))
        for volume in copies:
            if volume.move:
                log.warning("found an interrupted move (%s)", volume.move,
                            extra={"volume": volume.name})  # fmt: skip
                self.spawn(volume.name)
