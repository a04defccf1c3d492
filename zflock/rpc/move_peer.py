"""A remote node as the destination of a move (`move.endpoint.DestinationSide`), over RPC.

`state` and `promote` use the move's connection. `resolve` opens a fresh one
each time: it is what the source asks after that connection failed (and all
that recovery needs, so recovery passes no connection).

`resolve` is bounded (connecting included) by `resolve_timeout`: a peer that
accepts connections but never answers (a stopped process, a hung ZFS) is
unreachable, and the caller retries, fenced. The move driver bounds `state`
and `promote` by its own step deadlines.
"""

from __future__ import annotations

import asyncio

import asyncssh

from zflock.cluster.config import NodeEntry
from zflock.move.endpoint import PromoteRequest, Promotion, Resolution
from zflock.move.fencing import parse_answer
from zflock.replication.model import ReplicaInfo
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import NodeUnreachable
from zflock.rpc.replica import RemoteReceiver


class RemoteDestination:
    def __init__(
        self,
        client: AgentClient | None,
        receiver: RemoteReceiver | None,
        peer: NodeEntry,
        key: asyncssh.SSHKey,
        volume: str,
        volume_id: str,
        epoch: int,
        *,
        resolve_timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.receiver = receiver
        self.peer = peer
        self.key = key
        self.volume = volume
        self.volume_id = volume_id
        self.epoch = epoch
        self.resolve_timeout = resolve_timeout

    async def state(self) -> ReplicaInfo:
        assert self.receiver is not None, "state() needs the move's connection"
        return await self.receiver.state()

    async def promote(self, request: PromoteRequest) -> Promotion:
        assert self.client is not None, "promote() needs the move's connection"
        result: Promotion = await self.client.call("promote_replica", request)
        return result

    async def resolve(self, move_id: str) -> Resolution:
        args = m.ResolveMove(
            name=self.volume, volume_id=self.volume_id, move_id=move_id, epoch=self.epoch
        )
        seconds = self.resolve_timeout
        try:
            async with asyncio.timeout(seconds):
                async with AgentClient(self.peer, self.key, timeout=seconds) as client:
                    answer: m.MoveResolution = await client.call("resolve_move", args)
        except TimeoutError:
            raise NodeUnreachable(
                self.peer.name, f"no answer to resolve_move within {seconds:g} s"
            ) from None
        return Resolution(parse_answer(answer.status), answer.epoch)
