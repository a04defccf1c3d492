"""The CLI's OpenSSH transport, below the process: the argv it runs, the one-key
known_hosts, what ssh's complaints become, which keys ssh would refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from zflock.cluster.config import NodeEntry
from zflock.errors import UsageError
from zflock.rpc.errors import HOST_KEY_MISMATCH, KEY_REJECTED, HostKeyMismatch
from zflock.rpc.openssh import (
    OpenSSHIdentity,
    known_hosts_line,
    openssh_identity,
    openssh_problem,
    ssh_argv,
    unreachable,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKMN4t2TFe/DJ/BF1ICYf8LP5D0adMP370y7TVhUg3Kx"
NODE = NodeEntry(name="node1", address="10.0.0.1", port=7744, host_key=f"{KEY} a comment")


def options(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    return dict(p.split("=", 1) for p in pairs)


def test_the_argv_trusts_only_the_inventory_key_and_never_prompts() -> None:
    argv = ssh_argv(NODE, Path("/k/id"), Path("/t/hosts"), timeout=2.5)
    assert argv[:4] == ["ssh", "-F", "/dev/null", "-T"]  # no user or system config
    assert argv[-3:] == ["-s", "10.0.0.1", "zflock-rpc"]  # the address is its own word
    o = options(argv)
    assert o["StrictHostKeyChecking"] == "yes" and o["BatchMode"] == "yes"
    assert o["UserKnownHostsFile"] == "/t/hosts" and o["GlobalKnownHostsFile"] == "/dev/null"
    assert o["HostKeyAlias"] == "zflock-agent-node1"
    assert (o["IdentityFile"], o["IdentitiesOnly"], o["IdentityAgent"]) == ("/k/id", "yes", "none")
    assert o["PreferredAuthentications"] == "publickey"
    assert (o["Port"], o["User"], o["ConnectTimeout"]) == ("7744", "zflock", "3")
    assert o["ControlPath"] == "none" and o["ForwardAgent"] == "no"


def test_the_known_hosts_line_is_the_inventory_key_under_the_alias() -> None:
    assert known_hosts_line(NODE) == f"zflock-agent-node1 {KEY}\n"


@pytest.mark.parametrize(
    "bad",
    ["", "ssh-ed25519", "ssh-ed25519 AAAA\n* ssh-ed25519 BBBB", "ssh-ed25519 not*base64",
     "-o AAAA", "ssh-ed25519\tAAAA=x"],
)  # fmt: skip
def test_a_malformed_host_key_is_refused_before_ssh_runs(bad: str) -> None:
    node = NodeEntry(name="node1", address="10.0.0.1", port=7744, host_key=bad)
    with pytest.raises(Exception, match="bad host key in inventory"):
        known_hosts_line(node)


@pytest.mark.parametrize(
    ("stderr", "kind", "reason"),
    [
        ("@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
         "Host key verification failed.\n", HostKeyMismatch, HOST_KEY_MISMATCH),
        ("Host key verification failed.\n", HostKeyMismatch, HOST_KEY_MISMATCH),
        ("zflock@10.0.0.1: Permission denied (publickey).\n", None, KEY_REJECTED),
        ("Connection timed out during banner exchange\n", None, "no answer within 3 s"),
        ("ssh: connect to host 10.0.0.1 port 7744: Connection refused\n", None,
         "Connection refused"),
        ("ssh: connect to host 10.0.0.1 port 7744: No route to host\n", None,
         "No route to host"),
        ("", None, "ssh ended without a word"),
    ],
)  # fmt: skip
def test_what_ssh_said_becomes_the_asyncssh_clients_words(
    stderr: str, kind: type | None, reason: str
) -> None:
    err = unreachable("node1", stderr, timeout=3)
    assert err.reason == reason
    assert str(err) == f"node node1 unreachable: {reason}"
    if kind is not None:
        assert isinstance(err, kind)


def write_key(tmp_path: Path, text: str, mode: int) -> Path:
    key = tmp_path / "id"
    key.write_text(text)
    key.chmod(mode)
    return key


def test_a_private_openssh_key_is_usable(tmp_path: Path) -> None:
    key = write_key(tmp_path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", 0o600)
    assert openssh_problem(key) is None


def test_keys_ssh_would_refuse_are_named(tmp_path: Path) -> None:
    key = write_key(tmp_path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", 0o644)
    assert "can be read by other users" in (openssh_problem(key) or "")
    key = write_key(tmp_path, "-----BEGIN PRIVATE KEY-----\nAAAA\n", 0o600)
    assert "not in OpenSSH's private key format" in (openssh_problem(key) or "")
    spaced = tmp_path / "my keys"
    spaced.mkdir()
    key = write_key(spaced, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", 0o600)
    assert "ssh would read its spaces" in (openssh_problem(key) or "")
    with pytest.raises(UsageError, match="not found"):
        openssh_problem(tmp_path / "missing")


def test_a_relative_key_path_reaches_ssh_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_key(tmp_path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n", 0o600)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZFLOCK_SSH", "openssh")
    found = openssh_identity(Path("id"))
    assert found == OpenSSHIdentity(tmp_path / "id")


def test_the_choice_of_client_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZFLOCK_SSH", "asyncssh")
    assert openssh_identity(Path("/nonexistent")) == "ZFLOCK_SSH=asyncssh"
    monkeypatch.setenv("ZFLOCK_SSH", "rsh")
    with pytest.raises(UsageError, match="ZFLOCK_SSH='rsh': expected one of"):
        openssh_identity(Path("/nonexistent"))
