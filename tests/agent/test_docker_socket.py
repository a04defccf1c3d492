"""The Docker plugin's socket on real lab agents (no dockerd: the requests are dockerd's).

The agent binds and listens on the socket at start, but loads the HTTP server behind
it (aiohttp, about 10 MB of memory) only when something first connects
(zflock/agent/docker/plugin.py). Until then the agent does not carry it; the first
connections wait in the socket's backlog and are answered once it is loaded.
"""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.agentlab import AgentLab
from tests.docker.dockerlab import plugin_post
from zflock.lab import agents

pytestmark = pytest.mark.lab


def loaded_aiohttp(pid: int) -> bool:
    """Whether the process has aiohttp's compiled parser mapped (it is, once imported)."""
    return "/aiohttp/" in Path(f"/proc/{pid}/maps").read_text()


def test_the_http_server_is_loaded_at_the_first_request_and_serves_it(
    agent_lab: AgentLab,
) -> None:
    lab = agent_lab
    node = lab.state.nodes["node1"]
    sock = agents.docker_plugin_dir(node) / "zflock.sock"
    info = sock.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    pid = lab.agent_pid("node1")
    assert not loaded_aiohttp(pid)  # an agent Docker never asked
    # Two at once, as dockerd may send them: both wait while the server loads.
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: plugin_post(sock, "/Plugin.Activate", b"{}"), [1, 2]))
    assert answers == [{"Implements": ["VolumeDriver"]}] * 2
    assert loaded_aiohttp(pid)
    # Later requests: the same server, and a refusal is still a one-line Err.
    assert plugin_post(sock, "/VolumeDriver.Capabilities", b"{}") == {
        "Capabilities": {"Scope": "global"}
    }
    refused = plugin_post(sock, "/VolumeDriver.Create", b'{"Name": "../x"}')
    assert "invalid volume name" in refused["Err"], refused
    # The other agents were never asked: they still do not carry it.
    assert not loaded_aiohttp(lab.agent_pid("node2"))


def test_a_stopped_agent_removes_the_socket_it_never_served(agent_lab: AgentLab) -> None:
    lab = agent_lab
    node = lab.state.nodes["node3"]
    sock = agents.docker_plugin_dir(node) / "zflock.sock"
    assert sock.exists() and not loaded_aiohttp(lab.agent_pid("node3"))
    agents.stop(node)
    try:
        assert not sock.exists()
    finally:
        agents.start(lab.state, node)
    assert sock.exists()
