"""One SSH connection per peer, kept for the scheduled replication runs.

A run used to open its own connection to the replica's agent and close it at the
end: a key exchange and a public-key authentication each time, on both sides,
about 13 ms of CPU for the pair in asyncssh (docs/benchmarks.md), for every run
of every link. The scheduler's links now share one connection per peer; each
call opens its own channel on it (rpc/client.py), so runs to one peer go on side
by side as before.

A connection is used again only while it is open and still points at what the
inventory says of that peer (address, port, host key): the inventory is read for
every run, so an edited entry means a new connection. A run that fails drops the
connection it used (`discard`): the next run connects again, so a connection
broken in a way asyncssh has not noticed yet costs one failed run, never more.
Connecting is bounded like any connection (AgentClient's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncssh

from zflock.cluster.config import NodeEntry
from zflock.rpc.client import AgentClient


class PeerPool:
    def __init__(self, key: Callable[[], asyncssh.SSHKey]) -> None:
        self._key = key
        self._clients: dict[str, tuple[NodeEntry, AgentClient]] = {}
        self._connecting: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._clients)

    async def client(self, peer: NodeEntry) -> AgentClient:
        """A connected client for `peer`: the kept one if it is still good, else a new one."""
        lock = self._connecting.setdefault(peer.name, asyncio.Lock())
        async with lock:  # two runs to one peer at once: one connection
            kept = self._clients.get(peer.name)
            if kept is not None:
                entry, client = kept
                if entry == peer and client.is_open():
                    return client
                del self._clients[peer.name]
                await _close(client)
            client = AgentClient(peer, self._key())
            await client.connect()
            self._clients[peer.name] = (peer, client)
            return client

    async def discard(self, client: AgentClient) -> None:
        """Stop using `client` (a run on it failed); the next run connects again."""
        kept = self._clients.get(client.node.name)
        if kept is not None and kept[1] is client:
            del self._clients[client.node.name]
        await _close(client)

    async def close(self) -> None:
        clients = [client for _, client in self._clients.values()]
        self._clients.clear()
        for client in clients:
            await _close(client)


async def _close(client: AgentClient) -> None:
    # Closing a connection that already broke must not fail the caller.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout=5)
