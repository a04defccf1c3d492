"""The `prune_replica` operation: this node's replica prunes itself when its primary asks.

Registered in Handlers.table(). The request is checked under the volume's lock
against this node's own state (replication/zfs_prune.prune_replica): a peer
can ask, never order, and a request for a snapshot this node's own rules keep
is refused whole, with nothing destroyed.
"""

from __future__ import annotations

import logging

from zflock.agent.locks import VolumeLocks
from zflock.cluster.config import AgentConfig
from zflock.replication.zfs_endpoint import ZfsReceiver
from zflock.rpc.prune_messages import PruneReplica, ReplicaPruned
from zflock.rpc.replica import prune_request, replica_pruned
from zflock.zfs import Zfs, validate_component

log = logging.getLogger("zflock.agent")


class ReplicaPruning:
    def __init__(self, config: AgentConfig, zfs: Zfs, locks: VolumeLocks) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks

    async def prune_replica(self, args: PruneReplica, call: object) -> ReplicaPruned:
        name = validate_component(args.source.volume, "volume name")
        receiver = ZfsReceiver(
            self.zfs, self.config.dataset(name), self.config.mountpoint(name), self.config.node
        )
        async with self.locks.hold(name, "prune replica", wait=False):
            answer = await receiver.prune(args.source, prune_request(args))
        if answer.destroyed:
            log.info(
                "pruned %d snapshot(s) as %s asked",
                len(answer.destroyed),
                args.source.node,
                extra={"volume": name},
            )
        return replica_pruned(answer)
