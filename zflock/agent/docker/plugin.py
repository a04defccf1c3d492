"""The plugin as the agent runs it: one object to wire into zflock.agent.server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from zflock.agent.docker.service import DockerVolumes
from zflock.agent.handlers import Handlers
from zflock.cluster.config import AgentConfig

if TYPE_CHECKING:
    from zflock.agent.docker.http import PluginServer

log = logging.getLogger("zflock.agent.docker")


class DockerPlugin:
    def __init__(self, config: AgentConfig, handlers: Handlers) -> None:
        self.config = config
        self.service = DockerVolumes(
            config, handlers.volumes, handlers.locks, lambda: handlers.peer_key
        )
        self._server: PluginServer | None = None
        if config.docker_plugin:
            # Imported only when served: aiohttp adds about 13 MB to every agent's
            # memory. Imported here, before the agent listens, not in start(): an
            # agent that answers its peers must have its plugin socket up a moment
            # later, not after a slow import (the lab's Docker tests bind it then).
            import zflock.agent.docker.http  # noqa: F401

    def operations(self) -> dict[str, Callable[[Any, Any], Awaitable[Any]]]:
        # Served even with the plugin off: a peer's Mount asks every node who holds a volume.
        return {"docker_mounts": self.service.mounts_rpc}

    async def start(self) -> None:
        if not self.config.docker_plugin:
            return
        from zflock.agent.docker.http import PluginServer, PluginSocketBusy  # loaded in __init__

        server = PluginServer(self.service, self.config.docker_socket)
        try:
            await server.start()
        except (PluginSocketBusy, OSError) as exc:
            # Not fatal: moves, replication and fencing matter more than Docker's
            # convenience; `docker volume` then says the plugin is not found.
            log.error("docker volume plugin not served: %s", exc)
            return
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
