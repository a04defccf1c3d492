"""The prune step of a replication cycle (agent/link.py): the agent's side of
`replication.pruning.prune_after_sync`.

It takes the volume's policy from the primary's read (keep rules and the targets
whose bases the primary must protect; the node's `[replication]` defaults and no
targets when the volume has none): the cycle's read after its snapshot, which has
the snapshots too, so pruning reads the primary no more. It gives the pruning a way to ask every
other target for its replica's state over its own short connection: a target
that does not answer in time counts as not asked, which keeps more, never less.

The request that asks the peer to prune also gives it the primary's policy and
its serial, from the same read, for the copy the replica keeps
(agent/prune_replica.py; docs/failover.md): no round trip of its own. A peer
too old to know the field refuses the request as a whole (the codec is strict);
it is then asked again without it, and keeps no copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncssh

from zflock.agent.policies import policy_sent
from zflock.cluster.config import AgentConfig, load_inventory
from zflock.errors import ZflockError
from zflock.replication.endpoint import PrunableReplica, PruneAnswer, PruneRequest, SourceIdentity
from zflock.replication.model import ReplicaInfo, SnapRef
from zflock.replication.policy import (
    POLICY_PROPERTIES,
    defaults_from_config,
    policy_from_properties,
)
from zflock.replication.pruning import (
    PruneReport,
    PruneRules,
    SidePruned,
    StateOf,
    prune_after_sync,
)
from zflock.replication.zfs_sender import ZfsSender
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import RemoteError
from zflock.rpc.prune_messages import PolicySent, PruneReplica, ReplicaPruned
from zflock.rpc.replica import RemoteReceiver, prune_answer
from zflock.zfs import DatasetState, Zfs

log = logging.getLogger("zflock.agent.link")

# Seconds to connect to another target and read its state (both together); beyond
# it the target counts as not asked (pruning then keeps what could be its base).
ASK_TIMEOUT = 10.0


async def prune_rules(config: AgentConfig, zfs: Zfs, volume: str) -> PruneRules:
    """The volume's keep rules and targets, or the node's defaults with no targets."""
    return rules_of(config, await zfs.get(config.dataset(volume), POLICY_PROPERTIES))


def rules_of(config: AgentConfig, props: Mapping[str, str | None]) -> PruneRules:
    policy = policy_from_properties(props)
    if policy is None:
        defaults = defaults_from_config(config)
        return PruneRules(defaults.keep, defaults.keep_replica, None)
    return PruneRules(policy.keep, policy.keep_replica, policy.targets)


def state_asker(config: AgentConfig, key: asyncssh.SSHKey, volume: str, target: str) -> StateOf:
    async def ask() -> ReplicaInfo:
        try:
            node = load_inventory(config.cluster).node(target)
        except ZflockError as exc:
            raise ZflockError(f"{target} is not in the inventory ({exc})") from None
        # One bound for connecting and answering: a late answer counts as none.
        async with asyncio.timeout(ASK_TIMEOUT):
            async with AgentClient(node, key, timeout=ASK_TIMEOUT) as client:
                return await RemoteReceiver(client, volume).state()

    return ask


async def prune_after_cycle(
    config: AgentConfig,
    key: Callable[[], asyncssh.SSHKey | None],
    sender: ZfsSender,
    receiver: PrunableReplica,
    identity: SourceIdentity,
    peer: str,
    now: datetime | None = None,
    read: DatasetState | None = None,
    replica: ReplicaInfo | None = None,
    remembered: bool = False,
) -> PruneReport:
    """Prune `peer`'s replica and this primary after a successful sync (the caller holds
    the volume's lock and has the connection to `peer` open in `receiver`).

    `read`: the primary's copy as `sender.read()` gave it since its last change (a
    cycle's read after its snapshot); it has the policy and the snapshots, so the
    step reads neither again. Read here when None. `replica`: the peer's replica as the
    sync left it (driver.Outcome.replica; asked when None: pruning.prune_after_sync).
    `remembered`: `read` comes from the run before (agent/link_memory.py), so the
    primary is read again before anything of it is destroyed."""
    volume = identity.volume
    try:
        if read is None:
            read = await sender.read()
        props = read.values
        rules = rules_of(config, props)
    except ZflockError as exc:  # a damaged policy: no rules to follow, so nothing goes
        log.warning("not pruning: %s", exc, extra={"volume": volume})
        why = f"not pruned: {exc}"
        return PruneReport(SidePruned(peer, skipped=why), SidePruned(config.node, skipped=why))
    own_key = key()
    others: dict[str, StateOf] = {}
    if own_key is not None:
        for target in rules.targets or ():
            if target not in (peer, config.node):
                others[target] = state_asker(config, own_key, volume, target)
    if isinstance(receiver, RemoteReceiver):
        receiver = WithPolicy(receiver, policy_sent(props))
    report = await prune_after_sync(
        sender,
        receiver,
        identity,
        rules,
        peer=peer,
        others=others,
        now=now if now is not None else datetime.now(UTC),
        source=sender.source_of(read),
        replica_state=replica,
        source_remembered=remembered,
    )
    for error in report.errors:
        log.warning("pruning: %s", error, extra={"volume": volume})
    return report


class WithPolicy:
    """The peer's replica, pruned with the primary's policy in the same request."""

    def __init__(self, remote: RemoteReceiver, policy: PolicySent) -> None:
        self.remote = remote
        self.policy = policy

    async def state(self) -> ReplicaInfo:
        return await self.remote.state()

    async def prune(self, source: SourceIdentity, request: PruneRequest) -> PruneAnswer:
        args = PruneReplica(
            source=source, keep=request.keep, now=request.now,
            source_snapshots=list(request.source_snapshots), destroy=list(request.destroy),
            policy=self.policy,
        )  # fmt: skip
        try:
            pruned: ReplicaPruned = await self.remote.client.call("prune_replica", args)
        except RemoteError as exc:
            if "unknown field 'policy'" not in exc.remote_message:
                raise
            # An older agent: prune as it knows how; it keeps no copy of the policy.
            legacy = LegacyPruneReplica(source, request.keep, request.now,
                                        args.source_snapshots, args.destroy)  # fmt: skip
            pruned = await self.remote.client.call("prune_replica", legacy)
        return prune_answer(pruned)


@dataclass(frozen=True)
class LegacyPruneReplica:
    """PruneReplica as agents before the policy copy decode it (no `policy` field, not
    even null: their codec refuses unknown fields)."""

    source: SourceIdentity
    keep: str
    now: float
    source_snapshots: list[SnapRef] = field(default_factory=list)
    destroy: list[SnapRef] = field(default_factory=list)
