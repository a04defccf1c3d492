"""Names are unique in the cluster even under concurrent creates (DESIGN invariant 8).

Real 3-node lab: CLI processes race to create the same names on two nodes,
a node is unreachable, a creator dies holding a reservation. A monitor reads
every node's ZFS throughout and fails the test if a name ever has copies on
two nodes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.agentlab import AgentLab, patience, wait_until
from tests.conftest import ZfsNode
from zflock import lab as zlab
from zflock.agent.locks import VolumeLocks
from zflock.agent.names import Names
from zflock.agent.volumes import Volumes
from zflock.cluster.config import load_inventory
from zflock.errors import ZflockError
from zflock.lab import agents, procs
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import RemoteError

pytestmark = pytest.mark.lab


def copies(lab: AgentLab) -> dict[str, list[str]]:
    """Every zflock volume name -> the nodes holding a copy of it (read from ZFS)."""
    found: dict[str, list[str]] = {}
    for node in lab.state.nodes:
        r = lab.node_run(
            node, "zfs", "get", "-H", "-r", "-o", "name,value", "zflock:volume", lab.ds(node)
        )
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            _, value = line.split("\t")
            if value != "-":
                found.setdefault(value, []).append(node)
    return found


class Monitor:
    """Polls every node's copies until stopped; remembers any name seen on two nodes."""

    def __init__(self, lab: AgentLab) -> None:
        self.lab = lab
        self.doubles: list[tuple[str, list[str]]] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, nodes in copies(self.lab).items():
                if len(nodes) > 1:
                    self.doubles.append((name, nodes))
            self.polls += 1
            self._stop.wait(0.5)  # each poll runs `zfs get` in 3 nodes: spare the cores

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(patience(120))


@pytest.fixture
def monitor(agent_lab: AgentLab) -> Iterator[Monitor]:
    with Monitor(agent_lab) as watching:
        yield watching
    assert watching.polls > 0
    assert watching.doubles == [], f"a name on two nodes: {watching.doubles[:3]}"


def one_line_error(r: tuple[int, str, str]) -> str:
    code, _, err = r
    assert code == 1, r
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0], f"not a one-line error: {err!r}"
    assert "Traceback" not in err
    return lines[0]


async def destroy_all(agent_lab: AgentLab, where: dict[str, list[str]]) -> None:
    """Destroy each volume on the node holding it, through the agents (no CLI start-ups)."""
    clients = {node: await _client(agent_lab, node) for node in agent_lab.state.nodes}
    try:
        await asyncio.gather(
            *(
                clients[node].call("destroy_volume", m.DestroyVolume(name=name))
                for name, nodes in where.items()
                for node in nodes
            )
        )
    finally:
        for client in clients.values():
            await client.close()


# 40 CLI processes at once on 2 shared cores: minutes, not seconds.
@pytest.mark.timeout(patience(600))
def test_concurrent_creates_of_one_name_on_two_nodes_never_both_succeed(
    agent_lab: AgentLab, monitor: Monitor
) -> None:
    names = [f"race{i}" for i in range(20)]
    racers = {
        (name, node): subprocess.Popen(
            [sys.executable, "-m", "zflock", "create", name, "--on", node],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=agent_lab.env,
        )
        for name in names
        for node in ("node1", "node2")
    }
    results: dict[tuple[str, str], tuple[int, str, str]] = {}
    for key, p in racers.items():
        out, err = p.communicate(timeout=patience(300))
        results[key] = (p.returncode, out, err)

    after = copies(agent_lab)
    both_failed = []
    for name in names:
        won = [node for node in ("node1", "node2") if results[(name, node)][0] == 0]
        assert len(won) <= 1, f"{name} created on {won}: {after.get(name)}"
        for node in ("node1", "node2"):
            if node not in won:
                line = one_line_error(results[(name, node)])
                assert name in line, line
        # The winner's copy is the only one; a failed create left nothing anywhere.
        assert after.get(name, []) == won, (name, won, after.get(name))
        if not won:
            both_failed.append(name)
    # Both may fail (each refused the other); a retry then succeeds: nothing lingers.
    for name in both_failed:
        r = agent_lab.cli("create", name, "--on", "node3")
        assert r.returncode == 0, r.stderr
    final = copies(agent_lab)
    assert all(len(final[name]) == 1 for name in names), final
    asyncio.run(destroy_all(agent_lab, {name: final[name] for name in names}))


async def _client(agent_lab: AgentLab, node: str) -> AgentClient:
    inventory = load_inventory(agent_lab.cluster_file)
    assert inventory.identity is not None
    key = asyncssh.read_private_key(str(inventory.identity))
    client = AgentClient(inventory.node(node), key)
    await client.connect()
    return client


@pytest.mark.timeout(patience(300))  # kills and restarts an agent: slow on a loaded host
async def test_a_create_with_a_node_unreachable_is_refused(
    agent_lab: AgentLab, monitor: Monitor
) -> None:
    node3 = agent_lab.state.nodes["node3"]
    agent = node3.processes["agent"]
    os.kill(agent.pid, signal.SIGKILL)
    try:
        wait_until("node3's agent gone", lambda: not procs.is_running(agent))
        before = agent_lab.zfs_state()
        r = agent_lab.cli("create", "lonely", "--on", "node1")
        line = one_line_error((r.returncode, r.stdout, r.stderr))
        assert "node3" in line and "unreachable" in line, line
        # The agent refuses by itself, whoever asks (not only our CLI).
        client = await _client(agent_lab, "node2")
        try:
            with pytest.raises(RemoteError, match="node node3 unreachable"):
                await client.call("create_volume", m.CreateVolume(name="lonely"))
        finally:
            await client.close()
        assert agent_lab.zfs_state() == before
    finally:
        agents.start(agent_lab.state, node3)
        zlab.save_state(agent_lab.state)
    r = agent_lab.cli("create", "lonely", "--on", "node1")
    assert r.returncode == 0, r.stderr
    assert copies(agent_lab)["lonely"] == ["node1"]
    assert agent_lab.cli("destroy", "lonely").returncode == 0


@pytest.mark.timeout(patience(300))  # waits out a reservation
async def test_a_dead_creators_reservation_expires(agent_lab: AgentLab, monitor: Monitor) -> None:
    ttl = patience(10)
    # A creator on node3 reserved "orphan" on node2, then died without releasing it.
    client = await _client(agent_lab, "node2")
    try:
        reserve = m.ReserveName(name="orphan", token="dead-creator", creator="node3", ttl=ttl)
        granted = await client.call("reserve_name", reserve)
        assert granted.node == "node2"
        blocked = m.CreateVolume(name="orphan")
        with pytest.raises(RemoteError, match="being created on node node3"):
            await client.call("create_volume", blocked)  # on node2 itself
    finally:
        await client.close()
    # Refused while the reservation lives (on another node too), nothing created ...
    r = agent_lab.cli("create", "orphan", "--on", "node1")
    if r.returncode != 0:
        line = one_line_error((r.returncode, r.stdout, r.stderr))
        assert "being created on node node3" in line, line
        assert "orphan" not in copies(agent_lab)

    # ... and free again once it expired: bounded, not forever.
    def created() -> bool:
        return agent_lab.cli("create", "orphan", "--on", "node1").returncode == 0

    if r.returncode != 0:
        wait_until("the orphaned reservation to expire", created, timeout=ttl + 60, interval=1)
    assert copies(agent_lab)["orphan"] == ["node1"]
    assert agent_lab.cli("destroy", "orphan").returncode == 0


async def test_reservations_reject_bad_input(agent_lab: AgentLab) -> None:
    before = agent_lab.zfs_state()
    client = await _client(agent_lab, "node1")
    try:
        for args, message in (
            (m.ReserveName(name="a/b", token="t", creator="x", ttl=1), "invalid volume name"),
            (m.ReserveName(name="ok", token="", creator="x", ttl=1), "token"),
            (m.ReserveName(name="ok", token="t" * 65, creator="x", ttl=1), "token"),
            (m.ReserveName(name="ok", token="t", creator="x", ttl=0), "ttl"),
            (m.ReserveName(name="ok", token="t", creator="x", ttl=1e9), "ttl"),
            (m.ReserveName(name="ok", token="t", creator="a\nb", ttl=1), "invalid node name"),
            (m.ReleaseName(name="../x", token="t"), "invalid volume name"),
        ):
            op = "reserve_name" if isinstance(args, m.ReserveName) else "release_name"
            with pytest.raises(RemoteError, match=message):
                await client.call(op, args)
    finally:
        await client.close()
    assert agent_lab.zfs_state() == before


# -- the cost of a create does not grow with the number of volumes ------------------------


async def test_create_reads_only_its_own_dataset(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    """Issue 15: `zflock create` asks each node about the one name, not the whole listing."""
    config = zfs_node.solo_config(src_root, tmp_path)
    zfs, runner = await zfs_node.recording()
    volumes = Volumes(config, zfs)
    names = Names(config, zfs, volumes, VolumeLocks(), lambda: None)
    for i in range(5):  # other volumes that a create must not read
        await names.create(f"other{i}", None, wait=True)
    runner.seen.clear()
    info = await names.create("mine", 1 << 20, wait=True)
    assert info.name == "mine" and info.node == "solo" and info.mounted and info.quota == 1 << 20
    mine = f"{src_root}/mine"
    touched = [argv[-1] for argv in runner.seen]
    assert touched and all(t == mine or t.startswith(mine + "@") for t in touched), runner.seen
    # The name is taken now: a second create is refused by the reservation's own check.
    with pytest.raises(ZflockError, match="already exists on node solo"):
        await names.create("mine", None, wait=True)
    assert len(names.table) == 0  # every reservation released
