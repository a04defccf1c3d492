"""The agent's part in moves, one module per concern, wired together here:

- move_source.py: the `move` operation on the source, run as a job on one
  replication link (agent/link.py);
- move_preflight.py: what refuses a move before anything changes, and its plan;
- move_destination.py: promote the replica, answer `resolve_move`;
- move_recovery.py: finish or undo interrupted moves (at start and in the background);
- move_site.py: this node's copy in a move (marker, hooks), shared by all of them.

The state machine itself is zflock.move.driver.
"""

from __future__ import annotations

import asyncio

from zflock.agent.jobs import Jobs
from zflock.agent.link import LinkServices
from zflock.agent.locks import VolumeLocks
from zflock.agent.move_destination import MoveDestination
from zflock.agent.move_recovery import MoveRecovery
from zflock.agent.move_site import MoveSite
from zflock.agent.move_source import MoveSource, SendEvent
from zflock.move.endpoint import PromoteRequest, Promotion
from zflock.rpc import messages as m


class Moves:
    """Every move this agent takes part in: as source, destination, or recovering one."""

    def __init__(self, links: LinkServices, locks: VolumeLocks, jobs: Jobs) -> None:
        site = MoveSite(links, locks)
        self.recovery = MoveRecovery(site)
        self.source = MoveSource(site, jobs, self.recovery)
        self.destination = MoveDestination(site)

    @property
    def background(self) -> set[asyncio.Task[None]]:
        """Recoveries running in the background (the agent waits for them when stopping)."""
        return self.recovery.background

    async def move(self, args: m.Move, send_event: SendEvent) -> m.MoveReport:
        return await self.source.move(args, send_event)

    async def promote(self, req: PromoteRequest) -> Promotion:
        return await self.destination.promote(req)

    async def resolve(self, args: m.ResolveMove) -> m.MoveResolution:
        return await self.destination.resolve(args)

    async def recover_all(self) -> None:
        await self.recovery.recover_all()
