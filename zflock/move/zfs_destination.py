"""The destination's side of a move: promote its replica, or settle a move it did not.

This runs in the destination's agent with the volume's lock held, and it
trusts nothing in the request: it promotes only a zflock *replica* of the
*same* volume (by id), whose newest snapshot is exactly the source's final
snapshot (by GUID), to an epoch above every epoch the copy has seen, and
never for a move it has already been told to abandon.

The point of no return is one property write, `zflock:promoted-by=<move>`.
Everything after it (epoch, role, writable, mounted) is idempotent and is
finished by `resolve` if a crash interrupts it; before it, `resolve` marks
the move abandoned (`zflock:aborted-move`) so that a late promote request
can never make this copy writable after the source has rolled back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from zflock.cluster.ownership import (
    PROP_EPOCH,
    PROP_ROLE,
    ROLE_PRIMARY,
    ROLE_REPLICA,
    ZFLOCK_PROPERTIES,
    NotManaged,
    Ownership,
    ownership_from_properties,
)
from zflock.errors import ZflockError
from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.move.marker import PROP_ABORTED_MOVE, PROP_PROMOTED_BY, valid_move_id
from zflock.move.recovery import ABORTED, PROMOTED
from zflock.zfs import Zfs

log = logging.getLogger("zflock.move")

PostHooks = Callable[[PromoteRequest], Awaitable[list[str]]]


class PromoteRefused(ZflockError):
    """The destination will not become the primary; the source must roll back."""


class ZfsDestination:
    def __init__(self, zfs: Zfs, dataset: str, mountpoint: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.mountpoint = mountpoint
        self.node = node

    async def _props(self) -> dict[str, str | None] | None:
        """The copy's zflock and move properties; None if the dataset does not exist."""
        if not await self.zfs.exists(self.dataset):
            return None
        return await self.zfs.get(
            self.dataset, [*ZFLOCK_PROPERTIES, PROP_PROMOTED_BY, PROP_ABORTED_MOVE]
        )

    def _ours(self, props: dict[str, str | None], volume_id: str) -> Ownership:
        try:
            o = ownership_from_properties(props)
        except NotManaged as exc:
            raise PromoteRefused(
                f"{self.node}: {self.dataset} is not a zflock copy ({exc})"
            ) from None
        if o.id != volume_id:
            raise PromoteRefused(
                f"{self.node}: {self.dataset} is a copy of another volume (id {o.id})"
            )
        return o

    async def promote(self, req: PromoteRequest, post_hooks: PostHooks) -> Promotion:
        started = time.monotonic()
        if not valid_move_id(req.move_id):
            raise PromoteRefused(f"bad move id {req.move_id!r}")
        props = await self._props()
        if props is None:
            raise PromoteRefused(f"{self.node}: {self.dataset} does not exist")
        o = self._ours(props, req.volume_id)
        if props.get(PROP_PROMOTED_BY) != req.move_id:
            if props.get(PROP_ABORTED_MOVE) == req.move_id:
                raise PromoteRefused(
                    f"{self.node}: move {req.move_id} was abandoned; it can no longer promote"
                )
            if o.role != ROLE_REPLICA:
                raise PromoteRefused(f"{self.node}: {self.dataset} is a {o.role}, not a replica")
            if o.epoch >= req.epoch:
                # Fencing: never make writable a copy that has seen this epoch already.
                raise PromoteRefused(
                    f"{self.node}: {self.dataset} has epoch {o.epoch}; refusing to promote "
                    f"it to epoch {req.epoch}"
                )
            snaps = await self.zfs.list_snapshots(self.dataset)
            if not snaps or snaps[-1].guid != req.guid:
                newest = f"@{snaps[-1].name} (guid {snaps[-1].guid})" if snaps else "none"
                raise PromoteRefused(
                    f"{self.node}: the replica's newest snapshot is {newest}, not the source's "
                    f"final snapshot (guid {req.guid}); refusing to promote"
                )
            # The point of no return.
            await self.zfs.set(self.dataset, {PROP_PROMOTED_BY: req.move_id})
            log.warning(
                "promoting to primary at epoch %d (move %s from %s)",
                req.epoch,
                req.move_id,
                req.source,
                extra={"volume": req.name},
            )
        snapshot = await self._finish(req.epoch)
        hook_errors = await post_hooks(req)
        return Promotion(
            node=self.node,
            epoch=req.epoch,
            snapshot=snapshot,
            mountpoint=self.mountpoint,
            seconds=round(time.monotonic() - started, 3),
            hook_errors=hook_errors,
        )

    async def _finish(self, epoch: int) -> str:
        """Epoch and role first, then writable, then mounted: each step idempotent."""
        await self.zfs.set(self.dataset, {PROP_EPOCH: str(epoch), PROP_ROLE: ROLE_PRIMARY})
        await self.zfs.set(
            self.dataset, {"readonly": "off", "canmount": "on", "mountpoint": self.mountpoint}
        )
        await self.zfs.mount(self.dataset)
        snaps = await self.zfs.list_snapshots(self.dataset)
        return snaps[-1].name if snaps else ""

    async def resolve(self, volume_id: str, move_id: str, epoch: int) -> str:
        """PROMOTED (finishing the promotion if it was cut short) or ABORTED (for good)."""
        if not valid_move_id(move_id):
            raise PromoteRefused(f"bad move id {move_id!r}")
        props = await self._props()
        if props is None:
            return ABORTED
        self._ours(props, volume_id)
        if props.get(PROP_PROMOTED_BY) == move_id:
            await self._finish(max(epoch, int(props.get(PROP_EPOCH) or 0)))
            return PROMOTED
        await self.zfs.set(self.dataset, {PROP_ABORTED_MOVE: move_id})
        log.warning("move %s abandoned: this copy stays a replica", move_id)
        return ABORTED
