"""The destination's side of a move: promote its replica, or settle a move it did not.

This runs in the destination's agent with the volume's lock held, and it
trusts nothing in the request: every decision is the fencing rule's
(zflock.move.fencing: `decide_promote`, `decide_resolve`) over this copy's
volume id, epoch, role, `promoted-by` and `aborted-move`, never the move id
alone. It promotes only a zflock *replica* of the *same* volume (by id),
whose newest snapshot is exactly the source's final snapshot (by GUID), to
an epoch above every epoch the copy has seen, and never for a move it has
already been told to abandon.

The point of no return is one property write, `zflock:promoted-by=<move>/<epoch>`
(the new epoch and role go in the same `zfs set`: atomic on OpenZFS, after it on
zfs-fuse). Everything after it (epoch, role, writable, mounted) is idempotent and is
finished by `resolve` if a crash interrupts it -- but only while the copy is
still that move's primary: a copy demoted or promoted again since answers
`superseded`. Before it, `resolve` marks the move abandoned
(`zflock:aborted-move`) so that a late promote request can never make this
copy writable after the source has rolled back. The epoch is never lowered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from zflock.cluster.ownership import (
    PROP_EPOCH,
    PROP_ROLE,
    PROP_STALE,
    ROLE_PRIMARY,
    ZFLOCK_PROPERTIES,
    NotManaged,
    ownership_from_properties,
    parse_stale,
)
from zflock.errors import ZflockError
from zflock.move.endpoint import PromoteRequest, Promotion, Resolution
from zflock.move.fencing import (
    CopyState,
    MoveRef,
    PromotedBy,
    decide_promote,
    decide_resolve,
    parse_aborted,
    parse_promoted_by,
    with_aborted,
)
from zflock.move.marker import (
    PROP_ABORTED_MOVE,
    PROP_MOVE,
    PROP_PROMOTED_BY,
    BadMarker,
    parse_marker,
    valid_move_id,
)
from zflock.replication.policy import POLICY_PROPERTIES
from zflock.replication.schedule import policy_after_move
from zflock.zfs import DatasetState, Zfs

log = logging.getLogger("zflock.move")

PostHooks = Callable[[PromoteRequest], Awaitable[list[str]]]

# What a primary's dataset has that a replica's does not (a replica is read-only and
# `canmount=noauto`: zflock.replication.zfs_endpoint stamps it so).
_WRITABLE_PRIMARY = {"readonly": "off", "canmount": "on"}


class PromoteRefused(ZflockError):
    """The destination will not become the primary; the source must roll back."""


class ZfsDestination:
    def __init__(self, zfs: Zfs, dataset: str, mountpoint: str, node: str) -> None:
        self.zfs = zfs
        self.dataset = dataset
        self.mountpoint = mountpoint
        self.node = node

    async def _read(self) -> DatasetState | None:
        """The copy's zflock, move and mount properties and its snapshots, in one read
        (None if the dataset does not exist).

        One read serves the whole promotion (the caller holds the volume's lock, and
        only this promotion's own writes change the copy meanwhile): the decision, the
        newest snapshot's GUID, what is already as a primary needs it, and the
        snapshot to report. On zfs-fuse every command is a process and a daemon round
        trip inside the downtime (docs/benchmarks.md, the cutover's steps)."""
        return await self.zfs.dataset_state(
            self.dataset,
            [
                *ZFLOCK_PROPERTIES,
                PROP_PROMOTED_BY,
                PROP_ABORTED_MOVE,
                PROP_MOVE,
                PROP_STALE,
                *POLICY_PROPERTIES,
                *_WRITABLE_PRIMARY,
                "mountpoint",
            ],
        )

    @staticmethod
    def _copy(props: Mapping[str, str | None]) -> CopyState:
        """The copy as the fencing rule reads it (NotManaged: not a zflock copy)."""
        o = ownership_from_properties(props)
        stale = parse_stale(props.get(PROP_STALE))
        try:
            marker = parse_marker(props.get(PROP_MOVE))
            moving_to = marker.new_epoch if marker else 0
        except BadMarker:
            moving_to = o.epoch + 1  # damaged: read as a move of its own in progress
        return CopyState(
            volume_id=o.id, epoch=o.epoch, role=o.role,
            promoted_by=parse_promoted_by(props.get(PROP_PROMOTED_BY)),
            aborted_moves=parse_aborted(props.get(PROP_ABORTED_MOVE)),
            lost_to=stale.epoch if stale else 0, moving_to=moving_to,
        )  # fmt: skip

    async def promote(self, req: PromoteRequest, post_hooks: PostHooks) -> Promotion:
        started = time.monotonic()
        if not valid_move_id(req.move_id):
            raise PromoteRefused(f"bad move id {req.move_id!r}")
        state = await self._read()
        try:
            copy = self._copy(state.values) if state is not None else None
        except NotManaged as exc:
            raise PromoteRefused(
                f"{self.node}: {self.dataset} is not a zflock copy ({exc})"
            ) from None
        move = MoveRef(req.volume_id, req.move_id, req.epoch)
        decision = decide_promote(copy, move)
        if decision.action == "refuse":
            raise PromoteRefused(f"{self.node}: {self.dataset}: {decision.reason}; refusing to "
                                 f"promote it to epoch {req.epoch}")  # fmt: skip
        assert state is not None and copy is not None  # the rule refuses an absent copy
        if decision.action == "promote":
            snaps = state.snapshots
            if not snaps or snaps[-1].guid != req.guid:
                newest = f"@{snaps[-1].name} (guid {snaps[-1].guid})" if snaps else "none"
                raise PromoteRefused(
                    f"{self.node}: the replica's newest snapshot is {newest}, not the source's "
                    f"final snapshot (guid {req.guid}); refusing to promote"
                )
            policy = await self._clear_for_policy(req, state.values)
            # The point of no return. The policy is set in the same write (a promoted
            # copy never lacks the schedule its volume had: docs/replication.md), and
            # so are the epoch and role, which `_finish` would write next anyway: one
            # atomic command on OpenZFS; on zfs-fuse `promoted-by` first, then the rest
            # at once (each is idempotent, and `resolve` finishes epoch and role).
            by = {PROP_PROMOTED_BY: PromotedBy(req.move_id, req.epoch).format()}
            rest = {**policy, PROP_EPOCH: str(req.epoch), PROP_ROLE: ROLE_PRIMARY}
            await self.zfs.set_in_steps(self.dataset, [by, rest])
            written = {**by, **rest}
            state = replace(
                state, values={**state.values, **written}, local=state.local | set(written)
            )
            log.warning(
                "promoting to primary at epoch %d (move %s from %s)",
                req.epoch,
                req.move_id,
                req.source,
                extra={"volume": req.name},
            )
        snapshot = await self._finish(req.epoch, copy, state)
        hook_errors = await post_hooks(req)
        return Promotion(
            node=self.node,
            epoch=req.epoch,
            snapshot=snapshot,
            mountpoint=self.mountpoint,
            seconds=round(time.monotonic() - started, 3),
            hook_errors=hook_errors,
        )

    async def _clear_for_policy(
        self, req: PromoteRequest, props: Mapping[str, str | None]
    ) -> dict[str, str]:
        """The policy values to set with the promotion, after removing this copy's
        policy properties that the new policy does not have (None: not sent)."""
        if req.policy is None:
            return {}
        wanted = policy_after_move(req.policy, req.source, self.node)
        for prop, value in wanted.items():
            if value is None and props.get(prop) not in (None, "", "-"):
                await self.zfs.inherit(self.dataset, prop)
        return {prop: value for prop, value in wanted.items() if value is not None}

    async def _finish(self, epoch: int, copy: CopyState, state: DatasetState) -> str:
        """Epoch and role first, then writable, then mounted: each step idempotent.
        Returns the newest snapshot's name.

        Only for a copy the fencing rule says is this move's primary: its epoch is at
        or below `epoch`, so this never lowers it. A move marker or stale label left
        from this copy's own past as a source is history once it is the primary (and
        goes before the copy is writable: no writable copy carries a label that says
        it lost). `state` is the copy as read at the start of this request, under the
        lock: a value it shows set on the copy itself is not written again (a
        replica's mountpoint is already this node's; a promotion finished after a
        crash has its epoch). Only a local value counts: zfs-fuse reports `readonly`
        of a mounted filesystem as the mount's (source `temporary`), not the property.

        The writable properties go at once (on zfs-fuse, where each is a command): a
        crash between them may leave the copy `canmount=on` and read-only, which
        zfs-fuse then mounts read-only when it starts; the `readonly=off` that
        `resolve` writes next makes that mount writable (tried).
        """
        assert copy.epoch <= epoch, "the fencing rule never finishes a copy past the move"
        props = state.values
        await self.zfs.write_at_once(
            self.dataset,
            self._changed(state, {PROP_EPOCH: str(epoch), PROP_ROLE: ROLE_PRIMARY}),
            clear=[p for p in (PROP_MOVE, PROP_STALE) if props.get(p) not in (None, "", "-")],
        )
        await self.zfs.write_at_once(
            self.dataset,
            self._changed(state, {**_WRITABLE_PRIMARY, "mountpoint": self.mountpoint}),
        )
        await self.zfs.mount(self.dataset)
        return state.snapshots[-1].name if state.snapshots else ""

    @staticmethod
    def _changed(read: DatasetState, wanted: dict[str, str]) -> dict[str, str]:
        """Those of `wanted` not set so on the copy itself in `read`."""
        return {p: v for p, v in wanted.items() if not read.is_local(p, v)}

    async def resolve(self, volume_id: str, move_id: str, epoch: int) -> Resolution:
        """The fencing rule's answer (decide_resolve), after finishing a promotion cut
        short or marking the move abandoned, as it says."""
        if not valid_move_id(move_id):
            raise PromoteRefused(f"bad move id {move_id!r}")
        state = await self._read()
        try:
            copy = self._copy(state.values) if state is not None else None
        except NotManaged:
            copy = None  # not a zflock copy: proves nothing either way
        verdict = decide_resolve(copy, MoveRef(volume_id, move_id, epoch))
        if verdict.finish:
            assert state is not None and copy is not None
            await self._finish(epoch, copy, state)
        elif verdict.abandon:
            assert copy is not None
            aborted = with_aborted(copy.aborted_moves, move_id)
            await self.zfs.set(self.dataset, {PROP_ABORTED_MOVE: aborted})
        level = logging.INFO if verdict.answer == "promoted" else logging.WARNING
        log.log(level, "move %s: %s (%s)", move_id, verdict.answer, verdict.reason)
        return Resolution(verdict.answer, verdict.epoch)
