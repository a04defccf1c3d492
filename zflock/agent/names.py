"""Creating a volume under a name no other node has, even under concurrent creates.

The agent asked to create `NAME` (the creator) reserves the name on every
node of its inventory, itself included, before it creates; the protocol and
its failure cases are in docs/design.md ("Unique names"):

1. reserve: a random token, on every node at once. A node grants when it has
   no zflock copy of NAME (one `zfs get` of that dataset) and no live
   reservation of NAME for another token; it keeps the grant in memory for
   RESERVATION_TTL seconds. A refusal, an unreachable node or no answer
   within the deadline refuses the create: nothing was created.
2. pin: the creator pins its own reservation, which must still be live and
   must come less than PIN_WITHIN seconds after it started asking (so every
   grant it holds is still live everywhere), then creates the dataset.
3. release: everywhere, once the dataset exists (it now refuses the name by
   itself) or the create failed; a release that does not arrive expires.

Two creators racing for one name never both succeed: each needs the other's
node to grant it, and the creating node refuses everyone from its grant
until its dataset exists. Both may fail; a retry then succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncssh

from zflock.agent.locks import VolumeLocks
from zflock.agent.reservations import (
    MAX_TOKEN,
    MAX_TTL,
    PIN_WITHIN,
    RESERVATION_TTL,
    NameTable,
    Refusal,
)
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig, NodeEntry, load_inventory, validate_node_name
from zflock.cluster.ownership import ZFLOCK_PROPERTIES, NotManaged, ownership_from_properties
from zflock.errors import UsageError, ZflockError
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import NodeUnreachable, RemoteError
from zflock.zfs import DatasetNotFound, Zfs, validate_component

log = logging.getLogger("zflock.agent.names")

RELEASE_WITHIN = 10.0  # seconds spent releasing on peers; what is not released expires


class NameTaken(ZflockError):
    """This node refuses to reserve the name."""


class Names:
    """This node's reservations, and the create that asks every node for one."""

    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        volumes: Volumes,
        locks: VolumeLocks,
        peer_key: Callable[[], asyncssh.SSHKey | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.zfs = zfs
        self.volumes = volumes
        self.locks = locks
        self.peer_key = peer_key
        self.clock = clock
        self.table = NameTable()

    # -- the node's side: reserve, release -------------------------------------------

    async def reserve_name(self, args: m.ReserveName, call: Any = None) -> m.NameReserved:
        name = validate_component(args.name, "volume name")
        if not args.token or len(args.token) > MAX_TOKEN or not args.token.isprintable():
            raise UsageError(f"invalid reservation token (1 to {MAX_TOKEN} printable characters)")
        if not 0 < args.ttl <= MAX_TTL:
            raise UsageError(f"reservation ttl must be in (0, {MAX_TTL:g}] seconds")
        validate_node_name(args.creator)  # it ends up in other clients' error messages
        node = self.config.node
        refused = self.table.reserve(name, args.token, args.creator, args.ttl, self.clock())
        if refused is not None:
            if refused.why is Refusal.FULL:
                raise NameTaken(f"node {node} has too many names reserved at once; retry later")
            creator = refused.holder.creator if refused.holder else "?"
            raise NameTaken(
                f"volume {name} is being created on node {creator} by a concurrent create; "
                "retry if that one fails"
            )
        # Recorded first, checked second: a create on this node pins its own
        # reservation, so it cannot start between this check and our grant.
        try:
            role = await self._copy_here(name)
        except BaseException:
            self.table.release(name, args.token)
            raise
        if role is not None:
            self.table.release(name, args.token)
            raise NameTaken(f"volume {name} already exists on node {node} ({role})")
        return m.NameReserved(node=node, ttl=args.ttl)

    async def release_name(self, args: m.ReleaseName, call: Any = None) -> m.Empty:
        self.table.release(validate_component(args.name, "volume name"), args.token)
        return m.Empty()

    async def _copy_here(self, name: str) -> str | None:
        """The role of this node's zflock copy of `name` (one `zfs get`), or None."""
        try:
            props = await self.zfs.get(self.config.dataset(name), ZFLOCK_PROPERTIES)
        except DatasetNotFound:
            return None
        try:
            return ownership_from_properties(props).role
        except NotManaged:
            # Not a zflock volume: not a copy of anything. On the creating node
            # `zfs create` refuses it; elsewhere it only blocks replicas there.
            return None

    # -- the creator's side ----------------------------------------------------------

    async def create(self, name: str, quota: int | None, *, wait: bool) -> m.VolumeInfo:
        """Create `name` here if every node of the inventory grants it (see the module)."""
        name = validate_component(name, "volume name")
        if quota is not None and quota <= 0:
            raise ZflockError(f"quota must be positive, got {quota}")
        inventory = load_inventory(self.config.cluster)
        peers = [inventory.nodes[n] for n in sorted(inventory.nodes) if n != self.config.node]
        key = self.peer_key()
        if peers and key is None:
            raise ZflockError("agent has no key to talk to peers")
        token = uuid.uuid4().hex
        request = m.ReserveName(name=name, token=token, creator=self.config.node,
                                ttl=RESERVATION_TTL)  # fmt: skip
        started = self.clock()
        async with contextlib.AsyncExitStack() as stack:
            granted: list[AgentClient] = []
            try:
                await self.reserve_name(request)
                refusals = await asyncio.gather(
                    *(self._reserve_on(p, key, request, stack, granted) for p in peers)
                )
                problems = list(dict.fromkeys(r for r in refusals if r is not None))
                if problems:
                    raise ZflockError(f"cannot create {name}: {'; '.join(problems)}")
                if not self.table.pin(name, token, started, self.clock()):
                    raise ZflockError(
                        f"cannot create {name}: reserving the name on every node took "
                        f"more than {PIN_WITHIN:g} s; retry"
                    )
                async with self.locks.hold(name, "create", wait=wait):
                    return await self.volumes.create(name, quota)
            finally:
                self.table.release(name, token)
                await self._release_on(granted, m.ReleaseName(name=name, token=token))

    async def _reserve_on(
        self,
        peer: NodeEntry,
        key: asyncssh.SSHKey | None,
        request: m.ReserveName,
        stack: contextlib.AsyncExitStack,
        granted: list[AgentClient],
    ) -> str | None:
        """None when `peer` granted the name, else why not (one phrase)."""
        assert key is not None
        client = AgentClient(peer, key, timeout=PIN_WITHIN)
        try:
            async with asyncio.timeout(PIN_WITHIN):
                await stack.enter_async_context(client)
                await client.call("reserve_name", request)
        except TimeoutError:
            return f"node {peer.name} did not answer within {PIN_WITHIN:g} s"
        except RemoteError as exc:
            return exc.remote_message
        except NodeUnreachable as exc:
            return f"{exc} (every node must agree that the name is free)"
        except ZflockError as exc:
            return f"node {peer.name}: {exc}"
        granted.append(client)
        return None

    async def _release_on(self, clients: list[AgentClient], request: m.ReleaseName) -> None:
        """Release everywhere we were granted; what fails or is late expires by itself."""

        async def one(client: AgentClient) -> None:
            try:
                async with asyncio.timeout(RELEASE_WITHIN):
                    await client.call("release_name", request)
            except (TimeoutError, ZflockError) as exc:
                log.info("could not release the name on %s (it expires): %s",
                         client.node.name, exc, extra={"volume": request.name})  # fmt: skip

        await asyncio.gather(*(one(c) for c in clients))
