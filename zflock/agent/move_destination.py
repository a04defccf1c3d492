"""The destination's part in a move: promote its replica, or say what became of a move."""

from __future__ import annotations

import logging

from zflock.agent.hooks import HookFailed
from zflock.agent.move_site import MoveSite
from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.move.zfs_destination import ZfsDestination
from zflock.rpc import messages as m
from zflock.zfs import validate_component

log = logging.getLogger("zflock.agent.moves")


class MoveDestination:
    def __init__(self, site: MoveSite) -> None:
        self.site = site

    def _destination(self, name: str) -> ZfsDestination:
        name = validate_component(name, "volume name")
        config = self.site.config
        return ZfsDestination(
            self.site.zfs, config.dataset(name), config.mountpoint(name), config.node
        )

    async def promote(self, req: PromoteRequest) -> Promotion:
        site = self.site
        destination = self._destination(req.name)
        post = site.hooks_arg(req.post_hooks, "--post-hook")

        async def post_hooks(r: PromoteRequest) -> list[str]:
            context = site.context(r.name, r.source, site.config.node, r.epoch)
            try:
                await site.run_hooks(r.name, "post_cutover", post, context)
            except HookFailed as exc:
                log.error("%s", exc, extra={"volume": r.name})
                return [str(exc)]
            return []

        async with site.locks.hold(req.name, "promote", wait=True):
            return await destination.promote(req, post_hooks)

    async def resolve(self, args: m.ResolveMove) -> m.MoveResolution:
        destination = self._destination(args.name)
        async with self.site.locks.hold(args.name, "resolve move", wait=True):
            answer = await destination.resolve(args.volume_id, args.move_id, args.epoch)
        return m.MoveResolution(status=answer.answer, epoch=answer.epoch)
