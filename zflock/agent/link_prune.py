"""The prune step of a replication cycle (agent/link.py): the agent's side of
`replication.pruning.prune_after_sync`.

It reads the volume's policy from the volume (keep rules and the targets whose
bases the primary must protect; the node's `[replication]` defaults and no
targets when the volume has none), and gives the pruning a way to ask every
other target for its replica's state over its own short connection: a target
that does not answer in time counts as not asked, which keeps more, never less.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import asyncssh

from zflock.cluster.config import AgentConfig, load_inventory
from zflock.errors import ZflockError
from zflock.replication.endpoint import PrunableReplica, SourceIdentity
from zflock.replication.model import ReplicaInfo
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
from zflock.replication.zfs_endpoint import ZfsSender
from zflock.rpc.client import AgentClient
from zflock.rpc.replica import RemoteReceiver
from zflock.zfs import Zfs

log = logging.getLogger("zflock.agent.link")

# Seconds to connect to another target and read its state (both together); beyond
# it the target counts as not asked (pruning then keeps what could be its base).
ASK_TIMEOUT = 10.0


async def prune_rules(config: AgentConfig, zfs: Zfs, volume: str) -> PruneRules:
    """The volume's keep rules and targets, or the node's defaults with no targets."""
    policy = policy_from_properties(await zfs.get(config.dataset(volume), POLICY_PROPERTIES))
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
    zfs: Zfs,
    key: Callable[[], asyncssh.SSHKey | None],
    sender: ZfsSender,
    receiver: PrunableReplica,
    identity: SourceIdentity,
    peer: str,
    now: datetime | None = None,
) -> PruneReport:
    """Prune `peer`'s replica and this primary after a successful sync (the caller holds
    the volume's lock and has the connection to `peer` open in `receiver`)."""
    volume = identity.volume
    try:
        rules = await prune_rules(config, zfs, volume)
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
    report = await prune_after_sync(
        sender,
        receiver,
        identity,
        rules,
        peer=peer,
        others=others,
        now=now if now is not None else datetime.now(UTC),
    )
    for error in report.errors:
        log.warning("pruning: %s", error, extra={"volume": volume})
    return report
