"""The client side of the agent protocol, used by the CLI and by peer agents.

One SSH connection per node; each call opens its own session channel on the
`zflock-rpc` subsystem, so calls are independent and a long data transfer
does not block a status query on the same connection.

Host keys are verified against the inventory's key for that node, never
trusted on first use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

from zflock.cluster.config import NodeEntry
from zflock.errors import UsageError
from zflock.rpc.errors import HOST_KEY_MISMATCH, KEY_REJECTED, HostKeyMismatch, NodeUnreachable
from zflock.rpc.exchange import EventHandler, read_result, request
from zflock.rpc.framing import SUBSYSTEM, write_message
from zflock.rpc.openssh import CIPHERS, KEEPALIVE_COUNT, KEEPALIVE_INTERVAL, USERNAME

T = TypeVar("T")

# Channel window and packet size, both ends (agents talk only to asyncssh).
# asyncssh's defaults (2 MiB, 32 KiB) make the per-packet Python work the
# bottleneck of a ZFS stream; larger packets cut it eightfold.
WINDOW = 4 << 20
MAX_PACKET = 256 << 10


@dataclass(frozen=True)
class ClientIdentity:
    private_key: Path

    def load(self) -> asyncssh.SSHKey:
        try:
            return asyncssh.read_private_key(str(self.private_key))
        except FileNotFoundError:
            raise UsageError(f"identity key {self.private_key} not found") from None
        except (OSError, asyncssh.KeyImportError) as exc:
            raise UsageError(f"cannot read identity key {self.private_key}: {exc}") from None


class AgentClient:
    """A connection to one node's agent. Use as an async context manager."""

    def __init__(self, node: NodeEntry, key: asyncssh.SSHKey, *, timeout: float = 10.0) -> None:
        self.node = node
        self._key = key
        self._timeout = timeout
        self._conn: asyncssh.SSHClientConnection | None = None

    async def __aenter__(self) -> AgentClient:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            host_key = asyncssh.import_public_key(self.node.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise NodeUnreachable(self.node.name, f"bad host key in inventory: {exc}") from None
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(
                    self.node.address,
                    self.node.port,
                    username=USERNAME,
                    client_keys=[self._key],
                    known_hosts=([host_key], [], []),
                    encryption_algs=list(CIPHERS),
                    agent_path=None,
                    config=None,
                    preferred_auth=["publickey"],
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=KEEPALIVE_COUNT,
                    window=WINDOW,
                    max_pktsize=MAX_PACKET,
                ),
                timeout=self._timeout,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyMismatch(self.node.name, HOST_KEY_MISMATCH) from None
        except asyncssh.PermissionDenied:
            raise NodeUnreachable(self.node.name, KEY_REJECTED) from None
        except TimeoutError:
            reason = f"no answer within {self._timeout:.0f} s"
            raise NodeUnreachable(self.node.name, reason) from None
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise NodeUnreachable(self.node.name, reason) from None

    def is_open(self) -> bool:
        """Connected, and asyncssh has not seen the connection end."""
        return self._conn is not None and not self._conn.is_closed()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
            self._conn = None

    async def open_channel(self) -> asyncssh.SSHClientProcess[bytes]:
        if self._conn is None:
            raise NodeUnreachable(self.node.name, "not connected")
        try:
            return await self._conn.create_process(subsystem=SUBSYSTEM, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise NodeUnreachable(self.node.name, f"cannot open a channel: {exc}") from None

    async def call(self, op: str, args: Any, *, on_event: EventHandler | None = None) -> Any:
        """Run one operation and return its decoded result dataclass."""
        process = await self.open_channel()
        try:
            try:
                await write_message(process.stdin, request(op, args))
            except (OSError, asyncssh.Error) as exc:
                # The agent went away between opening the channel and the request:
                # callers retry NodeUnreachable, not a bare BrokenPipeError.
                raise NodeUnreachable(self.node.name, f"connection lost: {exc}") from None
            return await self.read_result(op, process, on_event)
        finally:
            process.close()

    async def read_result(
        self,
        op: str,
        process: asyncssh.SSHClientProcess[bytes],
        on_event: EventHandler | None = None,
    ) -> Any:
        lost = (OSError, asyncssh.Error)
        return await read_result(self.node.name, op, process.stdout, on_event, lost)
