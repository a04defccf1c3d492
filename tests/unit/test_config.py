"""Node file and inventory parsing: good files load, every bad one names file, key, problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from zflock.cluster.config import (
    ConfigError,
    inventory_path,
    load_agent_config,
    load_inventory,
    validate_node_name,
)
from zflock.errors import UsageError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9Y0E4jKq2u1nW3cC9m0s8cQm5d0zq9Q0m9c0Qm9c0Q test"

GOOD_AGENT = """
node = "node1"
pool_root = "tank/zflock"
listen = "10.0.0.11"
host_key = "keys/host"
[hooks]
pre_cutover = ["docker", "stop", "web"]
[volumes.web.hooks]
post_cutover = ["docker", "start", "web"]
timeout = 5
"""


def write(tmp_path: Path, text: str, name: str = "f.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_agent_config_loads_with_defaults(tmp_path: Path) -> None:
    c = load_agent_config(write(tmp_path, GOOD_AGENT))
    assert c.node == "node1"
    assert c.port == 7744
    assert c.mount_root == "/zflock"
    assert c.dataset("web") == "tank/zflock/web"
    assert c.mountpoint("web") == "/zflock/web"
    assert c.host_key == tmp_path / "keys/host"  # relative to the file
    assert c.hooks.pre_cutover == ("docker", "stop", "web")
    assert c.hooks_for("web").post_cutover == ("docker", "start", "web")
    assert c.hooks_for("web").timeout == 5.0
    assert c.hooks_for("other") == c.hooks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('pool_root = "tank/z"', "node: missing"),
        ('node = "n1"', "pool_root: missing"),
        ('node = "n;1"\npool_root = "tank/z"', "node: invalid node name"),
        ('node = "n1"\npool_root = "tank/../z"', "pool_root"),
        ('node = "n1"\npool_root = "-tank"', "pool_root"),
        ('node = "n1"\npool_root = "tank/z"\nport = 70000', "port: port 70000 out of range"),
        ('node = "n1"\npool_root = "tank/z"\nport = "22"', "port: expected int"),
        ('node = "n1"\npool_root = "tank/z"\npool-root = "x"', "pool-root: unknown key"),
        ('node = "n1"\npool_root = "tank/z"\nmount_root = "rel"', "mount_root"),
        ('node = "n1"\npool_root = "tank/z"\n[hooks]\npre_cutover = "rm -rf /"', "expected list"),
        ('node = "n1"\npool_root = "tank/z"\n[hooks]\npre_cutover = [1]', "argv"),
        ('node = "n1"\npool_root = "tank/z"\n[hooks]\ntimeout = -1', "must be positive"),
        ('node = "n1"\npool_root = "tank/z"\n[volumes."a;b".hooks]', "volumes.a;b"),
        ('node = "n1"\npool_root = "tank/z"\nlisten = "$(reboot)"', "listen"),
        ("node = ", "malformed TOML"),
    ],
)
def test_agent_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_agent_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_inventory(tmp_path)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        load_inventory(bad)


def test_inventory_loads(tmp_path: Path) -> None:
    inv = load_inventory(
        write(
            tmp_path,
            f'identity = "id"\n[nodes.node1]\naddress = "10.0.0.1"\nhost_key = "{KEY}"\n'
            f'[nodes.node2]\naddress = "n2.example"\nport = 7000\nhost_key = "{KEY}"\n',
        )
    )
    assert sorted(inv.nodes) == ["node1", "node2"]
    assert inv.node("node2").port == 7000
    assert inv.identity == tmp_path / "id"
    with pytest.raises(UsageError, match=r"unknown node 'node9'.*node1, node2"):
        inv.node("node9")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "nodes: missing"),
        ("[nodes]", "no nodes"),
        (f'[nodes."bad name"]\naddress = "1.2.3.4"\nhost_key = "{KEY}"', "invalid node name"),
        ('[nodes.n1]\naddress = "1.2.3.4"', "host_key: missing"),
        ('[nodes.n1]\naddress = "1.2.3.4"\nhost_key = "not a key"', "OpenSSH public key"),
        (f'[nodes.n1]\nhost_key = "{KEY}"', "address: missing"),
        (f'[nodes.n1]\naddress = "a b"\nhost_key = "{KEY}"', "neither an IP"),
        (f'[nodes.n1]\naddress = "1.2.3.4"\nhost_key = "{KEY}"\nextra = 1', "extra: unknown"),
        ("nodes = 3", "expected dict"),
    ],
)
def test_inventory_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_inventory(write(tmp_path, text))


def test_inventory_path_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ZFLOCK_CLUSTER", raising=False)
    assert inventory_path(None) == Path("/etc/zflock/cluster.toml")
    monkeypatch.setenv("ZFLOCK_CLUSTER", str(tmp_path / "env.toml"))
    assert inventory_path(None) == tmp_path / "env.toml"
    assert inventory_path(tmp_path / "x.toml") == tmp_path / "x.toml"


@pytest.mark.parametrize("name", ["node1", "n", "a.b-c_d", "N" * 63])
def test_node_names_ok(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize("name", ["", "-n", "a b", "a;b", "$(x)", "n" * 64, "é", "a/b"])
def test_node_names_bad(name: str) -> None:
    with pytest.raises(UsageError, match="invalid node name"):
        validate_node_name(name)
