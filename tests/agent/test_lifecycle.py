"""Trust (host keys, client keys), node failure, start-up refusals, SIGTERM, sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentlab import AgentLab
from zflock import lab
from zflock.lab import agents

pytestmark = pytest.mark.lab


# The CLI's two SSH clients (rpc/openssh.py, rpc/client.py) must refuse alike.
CLIENTS = pytest.mark.parametrize("ssh", ["openssh", "asyncssh"])


@CLIENTS
def test_wrong_host_key_is_refused_and_nothing_changes(
    agent_lab: AgentLab, tmp_path: Path, ssh: str
) -> None:
    env = {**agent_lab.env, "ZFLOCK_SSH": ssh}
    text = agent_lab.cluster_file.read_text()
    keys = [line for line in text.splitlines() if line.startswith("host_key")]
    # node1's entry gets node2's key: a man in the middle would look like this.
    swapped = text.replace(keys[0], keys[1], 1)
    assert swapped != text
    bad = tmp_path / "cluster.toml"
    bad.write_text(swapped)
    before = agent_lab.zfs_state()
    r = agent_lab.cli("create", "mitm", "--on", "node1", "--cluster", str(bad), env=env)
    assert r.returncode == 1
    assert "host key does not match" in r.stderr
    assert agent_lab.zfs_state() == before
    nodes = agent_lab.cli("nodes", "--json", "--cluster", str(bad), env=env)
    status = {n["node"]: n["status"] for n in json.loads(nodes.stdout)["nodes"]}
    assert status == {"node1": "down", "node2": "up", "node3": "up"}


@CLIENTS
def test_unknown_client_key_is_rejected(agent_lab: AgentLab, tmp_path: Path, ssh: str) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    before = agent_lab.zfs_state()
    env = {**agent_lab.env, "ZFLOCK_SSH": ssh}
    r = agent_lab.cli("create", "intruder", "--on", "node2", "--identity", str(key), env=env)
    assert r.returncode == 1
    assert "rejected" in r.stderr
    assert agent_lab.zfs_state() == before


def test_killed_agent_is_reported_down_others_up(agent_lab: AgentLab) -> None:
    node = agent_lab.state.nodes["node3"]
    rec = node.processes["agent"]
    os.kill(rec.pid, signal.SIGKILL)
    try:
        for _ in range(100):
            if not Path(f"/proc/{rec.pid}").exists():
                break
            time.sleep(0.05)
        r = agent_lab.cli("nodes", "--json", "--timeout", "3")
        assert r.returncode == 1
        rows = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}
        assert rows["node3"]["status"] == "down"
        assert "unreachable" in rows["node3"]["error"]
        assert rows["node1"]["status"] == rows["node2"]["status"] == "up"
        table = agent_lab.cli("nodes", "--timeout", "3")
        assert "DOWN" in table.stdout and "Traceback" not in table.stderr
        # ls still lists what the live nodes have, and says which node it could not ask.
        ls = agent_lab.cli("ls", "--json", "--timeout", "3")
        assert ls.returncode == 1
        assert [u["node"] for u in json.loads(ls.stdout)["unreachable"]] == ["node3"]
    finally:
        agents.start(agent_lab.state, node)
        lab.save_state(agent_lab.state)
    assert agent_lab.cli("nodes").returncode == 0


# -- an agent of our own, as a child, to see its exit status ----------------------------


def write_config(agent_lab: AgentLab, tmp_path: Path, node: str, **overrides: object) -> Path:
    src = agents.agent_dir(agent_lab.state.nodes[node]) / "agent.toml"
    lines = []
    for line in src.read_text().splitlines():
        key = line.split(" = ", 1)[0]
        if key in overrides:
            continue
        lines.append(line)
    for key, value in overrides.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_agent(
    agent_lab: AgentLab, node: str, config: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    argv = [*lab.node_prefix(agent_lab.state, node), sys.executable, "-P", "-m", "zflock"]
    return subprocess.Popen(
        [*argv, "agent", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=config.parent,
    )


@pytest.fixture
def own_agents() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"pool_root": "tank/missing"}, 1, "pool root tank/missing does not exist"),
        ({"host_key": "/nonexistent/key"}, 1, "host key /nonexistent/key not found"),
        ({"authorized_keys": "/nonexistent/ak"}, 1, "authorized keys file /nonexistent/ak"),
        ({}, 1, "port 7744 on"),  # the lab's agent already listens there
        ({"port": 7745, "pool_root": "tank/../x"}, 2, "pool_root"),
        ({"port": 7745, "bogus": 1}, 2, "bogus: unknown key"),
    ],
)
def test_agent_refuses_to_start(
    agent_lab: AgentLab,
    tmp_path: Path,
    own_agents: list[subprocess.Popen[str]],
    overrides: dict[str, object],
    code: int,
    message: str,
) -> None:
    config = write_config(agent_lab, tmp_path, "node1", **overrides)
    p = start_agent(agent_lab, "node1", config)
    own_agents.append(p)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_sigterm_during_operations_exits_cleanly(
    agent_lab: AgentLab, tmp_path: Path, own_agents: list[subprocess.Popen[str]]
) -> None:
    """SIGTERM while creates are in flight: exit 0, every dataset fully marked or absent."""
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(30)
    config = write_config(agent_lab, tmp_path, "node2", port=7746, shutdown_grace=5.0)
    p = start_agent(agent_lab, "node2", config, env={**os.environ, "NOTIFY_SOCKET": str(notify)})
    own_agents.append(p)
    assert listener.recv(100) == b"READY=1"

    # An inventory of node2 alone, pointing at our agent's port.
    inv = tmp_path / "cluster.toml"
    blocks = agent_lab.cluster_file.read_text().split("\n\n")
    kept = [b for b in blocks if "[nodes." not in b or "[nodes.node2]" in b]
    inv.write_text("\n\n".join(kept).replace("port = 7744", "port = 7746"))

    def create(i: int) -> subprocess.Popen[bytes]:
        argv = ["create", f"term{i}", "--on", "node2", "--cluster", str(inv)]
        return subprocess.Popen(
            [sys.executable, "-m", "zflock", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=agent_lab.env,
        )

    creates = [create(i) for i in range(8)]
    # Signal as soon as the first create reached the agent.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = agent_lab.node_run("node2", "zfs", "list", "-H", "-o", "name", "-r", "tank/zflock")
        if "term" in r.stdout:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    for c in creates:
        c.wait(60)
    assert p.returncode == 0, err
    assert listener.recv(100) == b"STOPPING=1"
    listener.close()
    assert "stopped" in err.splitlines()[-1]

    r = agent_lab.node_run(
        "node2", "zfs", "get", "-H", "-r", "-o", "name,value", "zflock:id", "tank/zflock"
    )
    made = [line.split("\t") for line in r.stdout.splitlines() if "/term" in line]
    assert made, "no create reached ZFS before SIGTERM"
    for name, vid in made:
        assert len(vid) == 36, f"{name} exists without its zflock:id"
    for name, _ in made:
        agent_lab.node_run("node2", "zfs", "destroy", "-r", name)
