"""ACK at once while an SSH connection is young.

A client that leaves Nagle's algorithm on (OpenSSH's `ssh` does for a session without
a tty: the CLI's calls, rpc/openssh.py) holds a small packet until its last one is
ACKed, and Linux delays that ACK by up to 40 ms when the receiver has nothing to send
back. The SSH handshake meets this once per connection: the client's NEWKEYS gets no
answer, so its SERVICE_REQUEST waits for the delayed ACK. Measured on the lab: 56 ms
per CLI call, 15 ms with the delay gone (docs/benchmarks.md). TCP_QUICKACK is not a
lasting switch (the kernel goes back to delaying once the exchange looks interactive),
so it is set again after each read, for the handshake and the first request only:
long-lived peer connections and streams then behave as TCP normally does.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

log = logging.getLogger(__name__)

# Reads of a new connection after which ACKs are left to the kernel: the handshake,
# authentication and a first request take about a dozen.
YOUNG_READS = 32


def ack_quickly(conn: Any) -> None:
    """Wrap an asyncssh connection's data_received (an asyncio protocol: the transport
    looks the method up on the instance) to push each pending ACK out at once."""
    sock = conn.get_extra_info("socket")
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    received = conn.data_received
    left = YOUNG_READS

    def data_received(data: bytes, datatype: Any = None) -> None:
        nonlocal left
        received(data, datatype)
        if left > 0:
            left -= 1
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, 1)
            except OSError as exc:  # closed meanwhile: nothing to ACK
                log.debug("TCP_QUICKACK: %s", exc)
                left = 0
        if left == 0:
            conn.data_received = received  # back to asyncssh's own, no wrapper left

    conn.data_received = data_received
