"""Talking to many agents at once: the inventory plus a client key.

`call_all` asks every node concurrently and returns one `NodeResult` per
node, success or failure, so callers can report an unreachable node
instead of failing the whole command. With `deadline`, a node that has not
answered within it (connecting included) is a NodeUnreachable result: for
callers that must decide in bounded time (an agent's recovery), where one
node that accepts connections but never answers would otherwise hold them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from zflock.cluster.config import Inventory
from zflock.errors import ZflockError
from zflock.rpc.errors import NodeUnreachable
from zflock.rpc.exchange import EventHandler
from zflock.rpc.openssh import OpenSSHClient, OpenSSHIdentity

if TYPE_CHECKING:
    import asyncssh


class Client(Protocol):
    """One node's agent: AgentClient (asyncssh) or OpenSSHClient (the CLI)."""

    async def __aenter__(self) -> Client: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, op: str, args: Any, *, on_event: EventHandler | None = None) -> Any: ...


@dataclass(frozen=True)
class NodeResult:
    node: str
    value: Any = None
    error: ZflockError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Cluster:
    def __init__(
        self,
        inventory: Inventory,
        key: asyncssh.SSHKey | OpenSSHIdentity,
        *,
        timeout: float = 10.0,
    ):
        self.inventory = inventory
        self.key = key
        self.timeout = timeout

    def client(self, node: str) -> Client:
        entry = self.inventory.node(node)
        if isinstance(self.key, OpenSSHIdentity):
            return OpenSSHClient(entry, self.key, timeout=self.timeout)
        # Imported here: a CLI that talks through `ssh` never loads asyncssh.
        from zflock.rpc.client import AgentClient

        return AgentClient(entry, self.key, timeout=self.timeout)

    async def call(self, node: str, op: str, args: Any, **kwargs: Any) -> Any:
        async with self.client(node) as client:
            return await client.call(op, args, **kwargs)

    async def _result(self, node: str, op: str, args: Any, deadline: float | None) -> NodeResult:
        try:
            async with asyncio.timeout(deadline):
                return NodeResult(node, value=await self.call(node, op, args))
        except ZflockError as exc:
            return NodeResult(node, error=exc)
        except TimeoutError:
            # Only our deadline raises it here: the client's own become NodeUnreachable.
            reason = f"no answer to {op} within {deadline:g} s"
            return NodeResult(node, error=NodeUnreachable(node, reason))

    async def call_all(
        self,
        op: str,
        args: Any,
        nodes: Iterable[str] | None = None,
        *,
        deadline: float | None = None,
    ) -> list[NodeResult]:
        """Ask every node (or `nodes`) at once; each one's answer or error, in order.
        `deadline` (seconds, None: none) bounds each node's call, connecting included."""
        names = list(nodes) if nodes is not None else sorted(self.inventory.nodes)
        return list(await asyncio.gather(*(self._result(n, op, args, deadline) for n in names)))
