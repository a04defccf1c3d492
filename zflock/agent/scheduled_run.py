"""One scheduled run of a link, as the scheduler (agent/scheduler.py) starts it: the
link's service (agent/link.py) with the memory of its run before and the kept
connection to its peer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from zflock.agent.handlers import Handlers, replication_report
from zflock.agent.jobs import Job
from zflock.agent.link import ReplicationLink
from zflock.agent.link_memory import LinkMemory
from zflock.agent.peer_pool import PeerPool
from zflock.cluster.config import load_inventory
from zflock.rpc import messages as m

# One cycle of one link: (the job, volume, target) -> the run's report.
RunLink = Callable[[Job, str, str], Awaitable[m.ReplicationReport]]


def handlers_link(handlers: Handlers, pool: PeerPool) -> RunLink:
    """One cycle of the link's service (agent/link.py), as `zflock replicate` runs it,
    starting from what the link's run before left of both copies when nothing else
    touched the volume since (agent/link_memory.py), on the connection kept to the
    peer (`pool`: agent/peer_pool.py); the caller holds the volume's lock. The cycle
    reports its own events."""
    memory = LinkMemory(handlers.locks)

    async def run(job: Job, volume: str, target: str) -> m.ReplicationReport:
        peer = load_inventory(handlers.config.cluster).node(target)
        carried, recall = memory.recall(volume, target)
        link = ReplicationLink(volume, peer, handlers.links, carried=carried, pool=pool)
        try:
            result = await link.cycle(job=job)
        except BaseException:
            memory.forget(volume, target)
            raise
        memory.keep(volume, target, recall, result.carry)
        return replication_report(result, handlers.config.node)

    return run
