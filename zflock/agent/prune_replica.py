"""The `prune_replica` operation: this node's replica prunes itself when its primary asks,
and keeps the copy of the primary's replication policy that came with the request;
`store_policy_copy`: that copy alone (a target `zflock replicate --stop` drops).

Registered in Handlers.table(). The request is checked under the volume's lock
against this node's own state (replication/zfs_prune.prune_replica): a peer
can ask, never order, and a request for a snapshot this node's own rules keep
is refused whole, with nothing destroyed. The policy copy is stored only for a
sender the receive rules accept as this replica's primary, in one property
(`zflock:policy-copy`, one `zfs set`: atomic; rewritten only when it changed or
is a minute old), and never acted upon here: the
scheduler runs primaries' policies only, and a failover adopts the newest copy
(docs/failover.md).
"""

from __future__ import annotations

import logging

from zflock.agent.locks import VolumeLocks
from zflock.cluster.config import AgentConfig
from zflock.replication.endpoint import SourceIdentity
from zflock.replication.policy import PolicyCopy
from zflock.replication.zfs_endpoint import ZfsReceiver
from zflock.rpc import messages as m
from zflock.rpc.prune_messages import PolicySent, PruneReplica, ReplicaPruned, StorePolicyCopy
from zflock.rpc.replica import prune_request, replica_pruned
from zflock.zfs import Zfs, validate_component

log = logging.getLogger("zflock.agent")


class ReplicaPruning:
    def __init__(self, config: AgentConfig, zfs: Zfs, locks: VolumeLocks) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks

    def _receiver(self, name: str) -> ZfsReceiver:
        config = self.config
        return ZfsReceiver(self.zfs, config.dataset(name), config.mountpoint(name), config.node)

    async def prune_replica(self, args: PruneReplica, call: object) -> ReplicaPruned:
        name = validate_component(args.source.volume, "volume name")
        receiver = self._receiver(name)
        copy = None if args.policy is None else _copy(args.source, args.policy)
        async with self.locks.hold(name, "prune replica", wait=False):
            answer = await receiver.prune(args.source, prune_request(args), copy)
        if answer.destroyed:
            log.info(
                "pruned %d snapshot(s) as %s asked",
                len(answer.destroyed),
                args.source.node,
                extra={"volume": name},
            )
        return replica_pruned(answer)

    async def store_policy_copy(self, args: StorePolicyCopy, call: object) -> m.Empty:
        name = validate_component(args.source.volume, "volume name")
        receiver = self._receiver(name)
        async with self.locks.hold(name, "store the policy copy", wait=False):
            if not await receiver.keep_policy(args.source, _copy(args.source, args.policy)):
                return m.Empty()
        log.info("kept %s's policy (serial %d)", args.source.node, args.policy.serial,
                 extra={"volume": name})  # fmt: skip
        return m.Empty()


def _copy(source: SourceIdentity, sent: PolicySent) -> PolicyCopy:
    return PolicyCopy(sent.serial, source.node, sent.sent_at, dict(sent.policy))
