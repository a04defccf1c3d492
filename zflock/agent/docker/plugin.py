"""The plugin as the agent runs it: one object to wire into zflock.agent.server."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from zflock.agent.docker.listen import PluginSocketBusy, bind_socket
from zflock.agent.docker.service import DockerVolumes
from zflock.agent.handlers import Handlers
from zflock.cluster.config import AgentConfig

if TYPE_CHECKING:
    from zflock.agent.docker.http import PluginServer

log = logging.getLogger("zflock.agent.docker")


class DockerPlugin:
    """The socket is bound and listening from start(); the HTTP server behind it
    (aiohttp, about 10 MB of every agent's memory: docs/benchmarks.md) is loaded when
    Docker first connects, so an agent on a host that never uses the plugin never
    carries it. That first connection waits in the socket's backlog meanwhile."""

    def __init__(self, config: AgentConfig, handlers: Handlers) -> None:
        self.config = config
        self.service = DockerVolumes(
            config, handlers.volumes, handlers.locks, lambda: handlers.peer_key
        )
        self._sock: socket.socket | None = None  # bound, not yet served
        self._loading: asyncio.Task[None] | None = None
        self._server: PluginServer | None = None

    def operations(self) -> dict[str, Callable[[Any, Any], Awaitable[Any]]]:
        # Served even with the plugin off: a peer's Mount asks every node who holds a volume.
        return {"docker_mounts": self.service.mounts_rpc}

    async def start(self) -> None:
        if not self.config.docker_plugin:
            return
        path = self.config.docker_socket
        try:
            self._sock = bind_socket(path)
        except (PluginSocketBusy, OSError) as exc:
            # Not fatal: moves, replication and fencing matter more than Docker's
            # convenience; `docker volume` then says the plugin is not found.
            log.error("docker volume plugin not served: %s", exc)
            return
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._first_connection)
        log.info("docker volume plugin on %s", path)

    def _first_connection(self) -> None:
        """Docker connected: load the server (once) and let it accept."""
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._loading = asyncio.create_task(self._serve(self._sock), name="docker-plugin-load")

    async def _serve(self, sock: socket.socket) -> None:
        try:
            # In a thread: the import takes a moment, and the agent's peers and its
            # self-fencing must not wait for it.
            http = await asyncio.to_thread(importlib.import_module, "zflock.agent.docker.http")
            server: PluginServer = http.PluginServer(self.service, self.config.docker_socket, sock)
            await server.start()
        except Exception as exc:
            log.error("docker volume plugin not served: %s", exc)
            self._close_socket()
            return
        self._server = server
        log.info("docker volume plugin: HTTP server loaded at Docker's first request")

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        try:
            self.config.docker_socket.unlink()
        except FileNotFoundError:
            pass

    async def stop(self) -> None:
        loading, self._loading = self._loading, None
        if loading is not None:
            await asyncio.wait([loading], timeout=10)  # an import, bounded
            loading.cancel()
        if self._server is not None:
            await self._server.stop()  # closes the socket and removes its file
            self._server = None
            self._sock = None
        elif self._sock is not None:  # never served (or its loading was cut short)
            asyncio.get_running_loop().remove_reader(self._sock.fileno())  # False if gone
            self._close_socket()
