"""The plugin's unix socket, bound without aiohttp (docker/plugin.py loads that later).

Docker finds the plugin by its socket in /run/docker/plugins and connects when a
container or `docker volume` first needs it; until then the socket only listens, and
a connection waits in its backlog while the agent loads the HTTP server.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from zflock.errors import ZflockError

# Connections that can wait while the server loads (dockerd opens one per request).
BACKLOG = 64


class PluginSocketBusy(ZflockError):
    """Another live process serves the plugin socket."""


def bind_socket(path: Path) -> socket.socket:
    """A unix socket only root can connect to; a stale socket file is replaced, a live one not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise PluginSocketBusy(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by an agent that died
        else:
            raise PluginSocketBusy(f"another process serves {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never world-connectable, not even between bind and chmod
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.setblocking(False)
    sock.listen(BACKLOG)  # from here on a connection waits, even before anything serves it
    return sock
