"""`set_policy`: store, change or remove a volume's replication policy on its primary.

The policy lives on the primary's dataset as user properties
(`replication/policy.py`); this module only reads them, applies the pure
rules (parse, validate, merge, stop) and writes the result, under the
volume's lock so it cannot interleave with a move or another change. The
scheduler (agent/scheduler.py) acts on it; a move carries it (policy_to_carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from zflock.agent.locks import VolumeLocks
from zflock.cluster.config import AgentConfig, load_inventory
from zflock.errors import UsageError
from zflock.replication.policy import (
    POLICY_PROPERTIES,
    DamagedPolicy,
    ReplicationPolicy,
    defaults_from_config,
    merge,
    policy_from_input,
    policy_from_properties,
    policy_properties,
    stop,
)
from zflock.rpc import messages as m
from zflock.units import format_duration
from zflock.zfs import Zfs, validate_component

if TYPE_CHECKING:  # volumes.py lists policies with policy_view below
    from zflock.agent.volumes import Volumes


async def policy_to_carry(zfs: Zfs, dataset: str) -> dict[str, str]:
    """The policy properties set on `dataset`, as a move carries them to the new
    primary (PromoteRequest.policy; {} = none). Read under the volume's lock."""
    props = await zfs.get(dataset, POLICY_PROPERTIES)
    return {k: v for k, v in props.items() if v is not None and v not in ("", "-")}


def policy_info(volume: str, node: str, policy: ReplicationPolicy | None) -> m.PolicyInfo:
    if policy is None:
        return m.PolicyInfo(volume=volume, node=node, targets=[], every=None, keep=None)
    return m.PolicyInfo(
        volume=volume,
        node=node,
        targets=list(policy.targets),
        every=None if policy.every is None else format_duration(policy.every),
        keep=policy.keep.text(),
        keep_replica=policy.keep_replica.text(),
    )


def policy_view(
    volume: str, node: str, props: Mapping[str, str | None]
) -> tuple[m.PolicyInfo | None, str | None]:
    """(the policy, None) or (None, why it is damaged), for listings: never fails."""
    try:
        policy = policy_from_properties(props)
    except DamagedPolicy as exc:
        return None, str(exc)
    return (None if policy is None else policy_info(volume, node, policy)), None


class Policies:
    def __init__(self, config: AgentConfig, zfs: Zfs, volumes: Volumes, locks: VolumeLocks):
        self.config = config
        self.zfs = zfs
        self.volumes = volumes
        self.locks = locks

    async def set_policy(self, args: m.SetPolicy, call: object) -> m.PolicyInfo:
        name = validate_component(args.name, "volume name")
        await self.volumes.ownership(name)  # not found / not ours: before any wait
        node = self.config.node
        if args.stop:
            asked = None
        else:
            asked = policy_from_input(
                ",".join(args.to),
                args.every,
                args.keep,
                args.keep_replica,
                primary=node,
                defaults=defaults_from_config(self.config),
            )
            inventory = load_inventory(self.config.cluster)
            for target in asked.targets:
                inventory.node(target)  # unknown node: a usage error, nothing written
        await self.locks.acquire(name, "set the replication policy", wait=True)
        try:
            # Checked under the lock: a move may have demoted this copy meanwhile.
            if not (await self.volumes.ownership(name)).is_primary:
                raise UsageError(f"{name} on {node} is a replica: set its policy on the primary")
            dataset = self.config.dataset(name)
            try:
                existing = policy_from_properties(await self.zfs.get(dataset, POLICY_PROPERTIES))
            except DamagedPolicy:
                # Restating or removing the whole policy repairs it; removing one
                # target of a policy nobody can read cannot be done safely.
                if args.stop and args.to:
                    raise
                existing = None
            if asked is None:
                if args.to and existing is None:
                    raise UsageError(f"{name} has no replication policy")
                new = stop(existing, args.to) if existing is not None else None
            else:
                new = merge(existing, asked, node)
            await self._write(dataset, new)
            return policy_info(name, node, new)
        finally:
            self.locks.release(name)

    async def _write(self, dataset: str, policy: ReplicationPolicy | None) -> None:
        values = dict.fromkeys(POLICY_PROPERTIES) if policy is None else policy_properties(policy)
        await self.zfs.set(dataset, {k: v for k, v in values.items() if v is not None})
        current = await self.zfs.get(dataset, [k for k, v in values.items() if v is None])
        for prop, value in current.items():
            if value is not None:
                await self.zfs.inherit(dataset, prop)
