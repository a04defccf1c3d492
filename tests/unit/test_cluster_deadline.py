"""Cluster.call_all's per-call deadline (zflock/rpc/cluster.py), against real sockets:
a node that accepts connections but never answers is reported unreachable in time,
while the others' answers (here: a refused connection) come back as they are."""

from __future__ import annotations

import asyncio
import socket

import asyncssh

from zflock.cluster.config import Inventory, NodeEntry
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster
from zflock.rpc.errors import NodeUnreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_silent_node_is_unreachable_at_the_deadline() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    host_key = key.export_public_key().decode().strip()

    async def scenario() -> list[tuple[str, str]]:
        held: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accept, then never say a word (a hung agent)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        inventory = Inventory(
            nodes={
                "silent": NodeEntry("silent", "127.0.0.1", port, host_key),
                "closed": NodeEntry("closed", "127.0.0.1", free_port(), host_key),
            }
        )
        # The client's own connect timeout is far longer than the deadline.
        cluster = Cluster(inventory, key, timeout=300.0)
        async with server:
            results = await asyncio.wait_for(
                cluster.call_all("list_volumes", m.ListVolumes(), deadline=0.5), 60
            )
            for writer in held:
                writer.close()
        return [(r.node, type(r.error).__name__ + ": " + str(r.error)) for r in results]

    closed, silent = asyncio.run(scenario())
    assert closed[0] == "closed" and "NodeUnreachable" in closed[1], closed
    assert "within 0.5 s" not in closed[1], closed
    assert silent == (
        "silent",
        f"{NodeUnreachable.__name__}: node silent unreachable: no answer to list_volumes "
        "within 0.5 s",
    )
