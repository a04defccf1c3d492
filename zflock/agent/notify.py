"""systemd's sd_notify protocol, without a dependency: one datagram per state.

Only active when systemd set NOTIFY_SOCKET (Type=notify); a no-op otherwise,
so running the agent by hand or in the lab needs nothing special.
"""

from __future__ import annotations

import os
import socket


def sd_notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
