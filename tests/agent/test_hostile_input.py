"""Hostile and malformed input: a clear one-line error, the right exit code, no change anywhere.

The CLI validates first, but the agent must not trust the CLI: the same bad
names are also sent straight to an agent over the protocol.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest

from tests.agentlab import AgentLab
from zflock.cluster.config import load_inventory
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.errors import RemoteError, RemoteUsageError
from zflock.rpc.framing import read_message

pytestmark = pytest.mark.lab

USAGE, FAILED = 2, 1

CASES: list[tuple[list[str], int, str]] = [
    (["create", "a;b", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "$(reboot)", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "`id`", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "a b", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "..", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", ".", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "a@b", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "a#b", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "/web", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "web/", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "a/b", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "x" * 300, "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "wéb", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "web\n", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "", "--on", "node1"], USAGE, "invalid volume name"),
    (["create", "--", "-rf", "--on", "node1"], USAGE, ""),
    (["create", "web", "--on", "node9"], USAGE, "unknown node 'node9'"),
    (["create", "web", "--on", "node1;reboot"], USAGE, "invalid node name"),
    (["create", "web", "--on", "node1", "--quota", "10X"], USAGE, "invalid quota"),
    (["create", "web", "--on", "node1", "--quota", "-1"], USAGE, "invalid quota"),
    (["create", "web"], USAGE, "--on"),
    (["destroy", "a;b"], USAGE, "invalid volume name"),
    (["destroy", "web", "--node", "../etc"], USAGE, "invalid node name"),
    (["snapshot", "$(id)"], USAGE, "invalid volume name"),
    (["ls", "a b"], USAGE, "invalid volume name"),
    (["ls", "--node", "evil node"], USAGE, "invalid node name"),
    (["ls", "--node", "node9"], USAGE, "unknown node"),
    (["destroy", "nosuch"], FAILED, "volume nosuch not found"),
    (["snapshot", "nosuch"], FAILED, "not found"),
    (["ls", "nosuch"], FAILED, "not found"),
    (["nodes", "--identity", "/nonexistent/key"], USAGE, "identity key /nonexistent/key not found"),
    (["nodes", "--cluster", "/nonexistent.toml"], USAGE, "not found"),
]


@pytest.fixture(scope="module")
def before(agent_lab: AgentLab) -> dict[str, str]:
    return agent_lab.zfs_state()


@pytest.mark.parametrize(("args", "code", "message"), CASES, ids=lambda v: repr(v)[:40])
def test_cli_rejects(
    agent_lab: AgentLab, before: dict[str, str], args: list[str], code: int, message: str
) -> None:
    r = agent_lab.cli(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if message:  # our own errors are exactly one line
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert agent_lab.zfs_state() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodes = [", "malformed TOML"),
        ("[nodes.node1]\naddress = '10.0.0.1'\n", "host_key: missing"),
        ("[nodes.node1]\naddress = '10.0.0.1'\nhost_key = 'ssh-ed25519 AAAA'\nport = 0\n", "port"),
        ("[nodes.'bad;name']\n", "invalid node name"),
    ],
)
def test_bad_inventory_files(
    agent_lab: AgentLab, before: dict[str, str], tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "cluster.toml"
    bad.write_text(text)
    r = agent_lab.cli("nodes", "--cluster", str(bad))
    assert r.returncode == USAGE
    assert message in r.stderr and str(bad) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert agent_lab.zfs_state() == before


async def _client(agent_lab: AgentLab, node: str) -> AgentClient:
    inventory = load_inventory(agent_lab.cluster_file)
    assert inventory.identity is not None
    key = asyncssh.read_private_key(str(inventory.identity))
    client = AgentClient(inventory.node(node), key)
    await client.connect()
    return client


@pytest.mark.parametrize("name", ["a;b", "$(id)", "..", "a/b", "x" * 300, "-x", "a b"])
async def test_agent_validates_names_itself(
    agent_lab: AgentLab, before: dict[str, str], name: str
) -> None:
    client = await _client(agent_lab, "node1")
    try:
        for op, args in (
            ("create_volume", m.CreateVolume(name=name)),
            ("destroy_volume", m.DestroyVolume(name=name, force=True)),
            ("snapshot_volume", m.SnapshotVolume(name=name)),
        ):
            with pytest.raises(RemoteUsageError, match="invalid volume name"):
                await client.call(op, args)
    finally:
        await client.close()
    assert agent_lab.zfs_state() == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"garbage\n", "malformed message"),
        (b'{"zflock": 99, "op": "node_info", "args": {}}\n', "protocol version 99"),
        (b'{"zflock": 1, "op": "rm_rf", "args": {}}\n', "unknown operation"),
        (b'{"zflock": 1, "op": "create_volume", "args": {"name": 5}}\n', "expected str"),
        (b'{"zflock": 1, "op": "create_volume", "args": {"name": "a", "x": 1}}\n', "unknown field"),
    ],
)
async def test_agent_rejects_malformed_requests(
    agent_lab: AgentLab, before: dict[str, str], line: bytes, message: str
) -> None:
    client = await _client(agent_lab, "node2")
    try:
        process = await client.open_channel()
        process.stdin.write(line)
        reply = await asyncio.wait_for(read_message(process.stdout), 10)
        assert reply is not None and "error" in reply
        assert message in reply["error"]["message"]
        process.close()
        # The agent still serves after the garbage.
        info = await client.call("node_info", m.Empty())
        assert info.node == "node2"
    finally:
        await client.close()
    assert agent_lab.zfs_state() == before


async def test_wait_false_on_busy_volume_fails_clearly(agent_lab: AgentLab) -> None:
    """Two operations on one volume at once: with wait=False the second fails with VolumeBusy."""
    client = await _client(agent_lab, "node3")
    try:
        await client.call("create_volume", m.CreateVolume(name="lockme"))
        results = await asyncio.gather(
            *(client.call("snapshot_volume", m.SnapshotVolume(name="lockme", wait=False))
              for _ in range(6)),
            return_exceptions=True,
        )  # fmt: skip
        busy = [r for r in results if isinstance(r, RemoteError) and r.kind == "VolumeBusy"]
        done = [r for r in results if isinstance(r, m.SnapshotInfo)]
        assert done, results
        assert all(isinstance(r, m.SnapshotInfo | RemoteError) for r in results), results
        assert len({d.snapshot for d in done}) == len(done)  # never the same name twice
        # Six requests arrive within milliseconds; each snapshot runs several
        # zfs commands, so some must find the volume locked.
        assert busy, results
        assert "busy with another operation" in busy[0].remote_message
        # With wait=True all of them succeed, one after the other.
        waited = await asyncio.gather(
            *(client.call("snapshot_volume", m.SnapshotVolume(name="lockme")) for _ in range(4))
        )
        assert len({w.snapshot for w in waited}) == 4
        await client.call("destroy_volume", m.DestroyVolume(name="lockme"))
    finally:
        await client.close()
