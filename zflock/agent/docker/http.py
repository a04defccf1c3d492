"""Docker's legacy volume plugin protocol, served by aiohttp on a root-only unix socket.

Docker finds the plugin by its socket in /run/docker/plugins (the default
`docker_socket` in agent.toml) and POSTs JSON to /Plugin.Activate and
/VolumeDriver.*. Every answer is a JSON body; a refusal is status 500 with
`{"Err": "one line"}`, which the docker CLI prints as the error.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from zflock.agent.docker.model import DockerError, caller_id, parse_options, volume_name
from zflock.agent.docker.service import DockerVolumes
from zflock.errors import ZflockError

log = logging.getLogger("zflock.agent.docker")
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def routes(service: DockerVolumes) -> dict[str, Handler]:
    """Each endpoint: the request's JSON in, the answer's JSON out (DockerError -> Err)."""
    here = service.config.node

    async def activate(body: dict[str, Any]) -> dict[str, Any]:
        return {"Implements": ["VolumeDriver"]}

    async def capabilities(body: dict[str, Any]) -> dict[str, Any]:
        # global: a volume name means the same volume on every node (Docker then
        # asks this plugin, not its own cache, where a volume is).
        return {"Capabilities": {"Scope": "global"}}

    async def create(body: dict[str, Any]) -> dict[str, Any]:
        name = volume_name(body.get("Name"))
        await service.create(name, parse_options(body.get("Opts"), here))
        return {"Err": ""}

    async def remove(body: dict[str, Any]) -> dict[str, Any]:
        await service.remove(volume_name(body.get("Name")))
        return {"Err": ""}

    async def mount(body: dict[str, Any]) -> dict[str, Any]:
        name, ident = volume_name(body.get("Name")), caller_id(body.get("ID"))
        return {"Mountpoint": await service.mount(name, ident), "Err": ""}

    async def unmount(body: dict[str, Any]) -> dict[str, Any]:
        name, ident = volume_name(body.get("Name")), caller_id(body.get("ID"))
        await service.unmount(name, ident)
        return {"Err": ""}

    async def path(body: dict[str, Any]) -> dict[str, Any]:
        return {"Mountpoint": await service.path(volume_name(body.get("Name"))), "Err": ""}

    async def get(body: dict[str, Any]) -> dict[str, Any]:
        return {"Volume": await service.get(volume_name(body.get("Name"))), "Err": ""}

    async def list_(body: dict[str, Any]) -> dict[str, Any]:
        return {"Volumes": await service.list(), "Err": ""}

    return {
        "/Plugin.Activate": activate,
        "/VolumeDriver.Capabilities": capabilities,
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": mount,
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": path,
        "/VolumeDriver.Get": get,
        "/VolumeDriver.List": list_,
    }


def _answer(body: dict[str, Any]) -> web.Response:
    # A refusal is 500 with {"Err": ...}, as Docker's own plugin helpers answer:
    # Docker reads Err either way, but Podman 4 looks only at the status and
    # would run the container without its volume on a 200.
    status = 500 if body.get("Err") else 200
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def make_app(service: DockerVolumes) -> web.Application:
    table = routes(service)

    async def dispatch(request: web.Request) -> web.Response:
        handler = table.get(request.path)
        if handler is None:
            return web.Response(status=404, text=json.dumps({"Err": "unknown endpoint"}),
                                content_type="application/json")  # fmt: skip
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return _answer({"Err": "request body is not JSON"})
        if not isinstance(body, dict):
            return _answer({"Err": "request body is not a JSON object"})
        op = request.path.rsplit(".", 1)[-1]
        volume = body.get("Name") if isinstance(body.get("Name"), str) else None
        started = time.monotonic()
        try:
            answer = await handler(body)
        except ZflockError as exc:
            # One line for `docker`: a remote error's text names the node already.
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            level = logging.INFO if isinstance(exc, DockerError) else logging.WARNING
            log.log(level, "docker %s refused: %s", op, message, extra={"volume": volume})
            return _answer({"Err": message})
        except Exception as exc:
            log.exception("docker %s: internal error", op, extra={"volume": volume})
            return _answer({"Err": f"internal error in zflock agent: {exc!r}"})
        if op in ("Create", "Remove", "Mount", "Unmount"):
            took = time.monotonic() - started
            log.info("docker %s %s: ok in %.3f s", op, volume, took, extra={"volume": volume})
        return _answer(answer)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/{endpoint}", dispatch)
    return app


class PluginServer:
    """The plugin served on a socket already bound and listening (listen.bind_socket):
    start() once Docker first connects, stop() at shutdown (docker/plugin.py)."""

    def __init__(self, service: DockerVolumes, path: Path, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        self._runner = web.AppRunner(make_app(service), access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.SockSite(self._runner, self.sock)
        await site.start()

    async def stop(self) -> None:
        await self._runner.cleanup()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
