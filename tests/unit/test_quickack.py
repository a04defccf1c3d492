"""The agent ACKs at once while a connection is young (agent/quickack.py): on a real
TCP connection over loopback, each of the first reads leaves the socket in quickack
mode, and afterwards the connection's own data_received is back in place."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from zflock.agent.quickack import YOUNG_READS, ack_quickly


class Conn:
    """What ack_quickly uses of an asyncssh connection: its socket and data_received."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got: list[bytes] = []

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.got.append(data)


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            yield accepted


def quickack(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)


def test_the_first_reads_leave_the_socket_in_quickack_mode(tcp: socket.socket) -> None:
    conn = Conn(tcp)
    original = conn.data_received
    ack_quickly(conn)
    assert conn.data_received != original
    for i in range(YOUNG_READS):
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        conn.data_received(b"%d" % i)
        assert quickack(tcp) == 1, i
    assert conn.data_received == original  # unwrapped after the young reads
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    conn.data_received(b"old")
    assert quickack(tcp) == 0
    assert conn.got == [b"%d" % i for i in range(YOUNG_READS)] + [b"old"]


def test_a_connection_without_a_tcp_socket_is_left_alone() -> None:
    a, b = socket.socketpair()
    with a, b:
        conn = Conn(a)
        original = conn.data_received
        ack_quickly(conn)
        assert conn.data_received == original
