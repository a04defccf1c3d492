"""One SSH connection per peer, kept for the scheduled replication runs.

A run used to open its own connection to the replica's agent and close it at the
end: a key exchange and a public-key authentication each time, on both sides,
about 13 ms of CPU for the pair in asyncssh (docs/benchmarks.md), for every run
of every link. The scheduler's links now share one connection per peer; each
call opens its own channel on it (rpc/client.py), so runs to one peer go on side
by side as before.

A connection is handed out again only while it is open and still points at what
the inventory says of that peer (address, port, host key): the inventory is read
for every run, so an edited entry means a new connection. A run that fails
retires the connection it used: no run gets it any more, and it is closed once
the runs still using it are done (one run's failure, a refused receive say, must
not cut another run's stream on the same connection). So a connection broken in
a way asyncssh has not noticed yet costs one failed run, never more. Connecting
is bounded like any connection (AgentClient's timeout).
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
        self._kept: dict[str, tuple[NodeEntry, AgentClient]] = {}
        self._users: dict[AgentClient, int] = {}  # every client handed out and not closed
        self._connecting: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def client(self, peer: NodeEntry) -> AgentClient:
        """A connected client for `peer` (the kept one if it is still good); `release` it."""
        lock = self._connecting.setdefault(peer.name, asyncio.Lock())
        async with lock:  # two runs to one peer at once: one connection
            kept = self._kept.get(peer.name)
            if kept is not None:
                entry, client = kept
                if entry == peer and client.is_open():
                    self._users[client] += 1
                    return client
                await self._retire(client)
            client = AgentClient(peer, self._key())
            await client.connect()
            self._kept[peer.name] = (peer, client)
            self._users[client] = 1
            return client

    async def release(self, client: AgentClient, *, failed: bool = False) -> None:
        """A run is done with `client`; `failed`: no run gets it again."""
        if client not in self._users:
            return
        self._users[client] -= 1
        if failed:
            await self._retire(client)
        elif self._users[client] == 0 and not self._is_kept(client):
            await self._close(client)

    async def close(self) -> None:
        """At shutdown, once the runs have ended: close every connection."""
        self._kept.clear()
        for client in list(self._users):
            await self._close(client)

    def _is_kept(self, client: AgentClient) -> bool:
        kept = self._kept.get(client.node.name)
        return kept is not None and kept[1] is client

    async def _retire(self, client: AgentClient) -> None:
        if self._is_kept(client):
            del self._kept[client.node.name]
        if self._users.get(client, 0) == 0:
            await self._close(client)

    async def _close(self, client: AgentClient) -> None:
        self._users.pop(client, None)
        # Closing a connection that already broke must not fail the caller.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=5)
