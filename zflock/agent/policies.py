"""`set_policy`: store, change or remove a volume's replication policy on its primary.

The policy lives on the primary's dataset as user properties
(`replication/policy.py`); this module only reads them, applies the pure
rules (parse, validate, merge, stop) and writes the result, under the
volume's lock so it cannot interleave with a move or another change. The
scheduler (agent/scheduler.py) acts on it; a move carries it (policy_to_carry).

Every change raises the policy's serial (`zflock:policy-serial`, written in the
same `zfs set`), which orders the copies replicas keep of it (sent with every
sync: agent/link_prune.py). `--stop` also tells each target it drops, at once
and best-effort (each call bounded by TELL_SECONDS): a replica that receives no
more syncs must not keep a policy that a failover would revive. Targets that
could not be told are named in the answer (`not_told`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import asyncssh

from zflock.agent.locks import VolumeLocks
from zflock.cluster.config import AgentConfig, load_inventory
from zflock.errors import UsageError, ZflockError
from zflock.replication.endpoint import SourceIdentity
from zflock.replication.policy import (
    POLICY_PROPERTIES,
    PROP_POLICY_SERIAL,
    DamagedPolicy,
    ReplicationPolicy,
    defaults_from_config,
    merge,
    policy_from_input,
    policy_from_properties,
    policy_properties,
    policy_serial,
    stop,
)
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.rpc.prune_messages import PolicySent, StorePolicyCopy
from zflock.units import format_duration
from zflock.zfs import Zfs, validate_component

if TYPE_CHECKING:  # volumes.py lists policies with policy_view below
    from zflock.agent.volumes import Volumes

# Seconds for telling one dropped target (connecting included); they are told at once.
TELL_SECONDS = 5.0


async def policy_to_carry(zfs: Zfs, dataset: str) -> dict[str, str]:
    """The policy properties set on `dataset`, with its serial, as a move carries them to
    the new primary (PromoteRequest.policy; no policy properties = none; the promotion
    stores the serial one up). Read under the volume's lock."""
    props = await zfs.get(dataset, (*POLICY_PROPERTIES, PROP_POLICY_SERIAL))
    return {k: v for k, v in props.items() if v is not None and v not in ("", "-")}


def policy_sent(props: Mapping[str, str | None]) -> PolicySent:
    """What a primary sends its replicas of its stored policy (read under the lock)."""
    policy = {k: v for k in POLICY_PROPERTIES if (v := props.get(k)) not in (None, "", "-")}
    serial = policy_serial(props.get(PROP_POLICY_SERIAL))
    return PolicySent(serial=serial, sent_at=time.time(), policy=policy)


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
    if policy is None:
        return None, None
    serial = props.get(PROP_POLICY_SERIAL)
    info = policy_info(volume, node, policy)
    return replace(info, serial=None if serial is None else policy_serial(serial)), None


class Policies:
    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        volumes: Volumes,
        locks: VolumeLocks,
        peer_key: Callable[[], asyncssh.SSHKey | None] = lambda: None,
    ):
        self.config = config
        self.zfs = zfs
        self.volumes = volumes
        self.locks = locks
        self.peer_key = peer_key

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
            ownership = await self.volumes.ownership(name)
            if not ownership.is_primary:
                raise UsageError(f"{name} on {node} is a replica: set its policy on the primary")
            dataset = self.config.dataset(name)
            props = await self.zfs.get(dataset, (*POLICY_PROPERTIES, PROP_POLICY_SERIAL))
            serial = policy_serial(props.get(PROP_POLICY_SERIAL)) + 1
            try:
                existing = policy_from_properties(props)
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
            await self._write(dataset, new, serial)
            dropped = [t for t in existing.targets if new is None or t not in new.targets] if (
                existing is not None) else []  # fmt: skip
            identity = SourceIdentity.of(name, ownership, node)
            not_told = await self._tell(identity, dropped, new, serial)
        finally:
            self.locks.release(name)
        info = policy_info(name, node, new)
        return replace(info, serial=serial, not_told=not_told)

    async def _tell(
        self,
        identity: SourceIdentity,
        dropped: Sequence[str],
        policy: ReplicationPolicy | None,
        serial: int,
    ) -> dict[str, str]:
        """Give each dropped target the new policy for its copy (best-effort, at once,
        each bounded); the ones that could not be told, and why."""
        if not dropped:
            return {}
        key = self.peer_key()
        if key is None:
            return dict.fromkeys(dropped, "the agent has no host key loaded yet")
        values = {} if policy is None else policy_properties(policy)
        sent = PolicySent(serial=serial, sent_at=time.time(),
                          policy={k: v for k, v in values.items() if v is not None})  # fmt: skip
        try:
            cluster = Cluster(load_inventory(self.config.cluster), key, timeout=TELL_SECONDS)
        except ZflockError as exc:
            return dict.fromkeys(dropped, str(exc))
        results = await cluster.call_all(
            "store_policy_copy", StorePolicyCopy(identity, sent), dropped, deadline=TELL_SECONDS
        )
        return {r.node: str(r.error).splitlines()[0] if str(r.error) else "no answer"
                for r in results if not r.ok}  # fmt: skip

    async def _write(self, dataset: str, policy: ReplicationPolicy | None, serial: int) -> None:
        values = dict.fromkeys(POLICY_PROPERTIES) if policy is None else policy_properties(policy)
        # The serial in the same `zfs set`, last: on zfs-fuse (one command per property)
        # an interrupted write leaves the new targets under the old serial rather than
        # the old targets under a new one. (A removed `every` is inherited after it.)
        values = {**values, PROP_POLICY_SERIAL: str(serial)}
        await self.zfs.set(dataset, {k: v for k, v in values.items() if v is not None})
        current = await self.zfs.get(dataset, [k for k, v in values.items() if v is None])
        for prop, value in current.items():
            if value is not None:
                await self.zfs.inherit(dataset, prop)
