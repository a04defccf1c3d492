"""A remote node's replica as a replication `Receiver`, over the agent protocol.

The driver streams a step's bytes into `receive`; they travel as the raw
payload of a `receive_snapshot` channel, after its header line. asyncssh's
flow control (`drain`) keeps memory bounded on both sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncssh

from zflock.replication.endpoint import (
    Cleanup,
    PruneAnswer,
    PruneRequest,
    ReceiveResult,
    ReplicaModified,
    SourceIdentity,
    StepHeader,
)
from zflock.replication.model import ReplicaInfo
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import NodeUnreachable, RemoteError
from zflock.rpc.exchange import request
from zflock.rpc.framing import write_message
from zflock.rpc.prune_messages import PruneReplica, ReplicaPruned


def replica_state(info: ReplicaInfo, *, resume_supported: bool) -> m.ReplicaState:
    """The destination's answer: `info` on the wire (replica_info is the way back)."""
    return m.ReplicaState(
        exists=info.exists,
        volume=info.managed_volume,
        volume_id=info.volume_id,
        role=info.role,
        epoch=info.epoch,
        modified=info.modified_since_last_snapshot,
        resume_token=info.resume_token,
        snapshots=list(info.snapshots),
        resume_supported=resume_supported,
        resume_to_guid=info.resume_to_guid,
    )


def replica_info(state: m.ReplicaState, label: str) -> ReplicaInfo:
    return ReplicaInfo(
        exists=state.exists,
        managed_volume=state.volume,
        volume_id=state.volume_id,
        role=state.role,
        epoch=state.epoch,
        modified_since_last_snapshot=state.modified,
        resume_token=state.resume_token,
        resume_to_guid=state.resume_to_guid,
        snapshots=list(state.snapshots),
        label=label,
    )


def prune_request(args: PruneReplica) -> PruneRequest:
    return PruneRequest(
        keep=args.keep,
        now=args.now,
        source_snapshots=list(args.source_snapshots),
        destroy=list(args.destroy),
    )


def replica_pruned(answer: PruneAnswer) -> ReplicaPruned:
    """The receiver's answer on the wire (prune_answer is the way back)."""
    return ReplicaPruned(
        destroyed=list(answer.destroyed), snapshots=list(answer.snapshots), held=answer.held
    )


def prune_answer(pruned: ReplicaPruned) -> PruneAnswer:
    return PruneAnswer(
        destroyed=list(pruned.destroyed), snapshots=list(pruned.snapshots), held=pruned.held
    )


class RemoteReceiver:
    def __init__(self, client: AgentClient, volume: str) -> None:
        self.client = client
        self.volume = volume
        self.resume_supported = False

    async def state(self) -> ReplicaInfo:
        state = await self.client.call("replica_state", m.ReplicaStateRequest(name=self.volume))
        self.resume_supported = state.resume_supported
        return replica_info(state, f"{self.client.node.name}:{self.volume}")

    async def prepare(self, source: SourceIdentity, cleanup: Cleanup) -> None:
        await self.client.call("prepare_replica", m.PrepareReplica(source=source, cleanup=cleanup))

    async def prune(self, source: SourceIdentity, request: PruneRequest) -> PruneAnswer:
        """Ask the replica to prune itself (`prune_replica`); it decides from its own state."""
        args = PruneReplica(
            source=source,
            keep=request.keep,
            now=request.now,
            source_snapshots=list(request.source_snapshots),
            destroy=list(request.destroy),
        )
        pruned: ReplicaPruned = await self.client.call("prune_replica", args)
        return prune_answer(pruned)

    async def receive(
        self, source: SourceIdentity, header: StepHeader, chunks: AsyncIterator[bytes]
    ) -> ReceiveResult:
        op = "receive_snapshot"
        process = await self.client.open_channel()
        cut: Exception | None = None
        try:
            await write_message(
                process.stdin, request(op, m.ReceiveSnapshot(source=source, header=header))
            )
            try:
                async for chunk in chunks:
                    process.stdin.write(chunk)
                    await process.stdin.drain()
            except (OSError, asyncssh.Error) as exc:
                # The destination stopped reading: its answer says why.
                cut = exc
            else:
                process.stdin.write_eof()
            try:
                result = await self.client.read_result(op, process)
            except RemoteError as exc:
                if exc.kind == ReplicaModified.__name__:
                    # Typed again on this side: the driver re-plans on it (rule 12).
                    raise ReplicaModified(exc.remote_message) from None
                raise
        finally:
            process.close()
        if cut is not None:
            raise NodeUnreachable(self.client.node.name, f"stream cut: {cut}")
        return ReceiveResult(snapshot=result.snapshot, guid=result.guid, bytes=result.bytes)
