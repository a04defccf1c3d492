"""The CLI reaches the agents through OpenSSH's `ssh` (rpc/openssh.py), or asyncssh
where ssh is missing, would refuse the key, or $ZFLOCK_SSH says so. Both answer alike;
the ssh path never loads asyncssh (the point of it: start-up); a stopped agent is
given up on within the timeout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agentlab import AgentLab
from zflock.cluster.config import load_inventory

pytestmark = pytest.mark.lab


def cli(
    lab: AgentLab, *args: str, ssh: str | None, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`zflock ARGS` with $ZFLOCK_SSH set (None: unset), listing its imports on stderr."""
    env = {k: v for k, v in lab.env.items() if k != "ZFLOCK_SSH"}
    if ssh is not None:
        env["ZFLOCK_SSH"] = ssh
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "zflock", *args],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip


def loaded_asyncssh(r: subprocess.CompletedProcess[str]) -> bool:
    return any(line.endswith(" asyncssh") for line in r.stderr.splitlines())


def errors(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if not line.startswith("import time:")]


def test_both_clients_give_the_same_answers_and_ssh_never_loads_asyncssh(
    agent_lab: AgentLab,
) -> None:
    assert agent_lab.cli("create", "viassh", "--on", "node2").returncode == 0
    answers = {}
    for ssh in (None, "openssh", "asyncssh"):
        r = cli(agent_lab, "ls", "viassh", "--json", ssh=ssh)
        assert r.returncode == 0, errors(r)
        assert loaded_asyncssh(r) == (ssh == "asyncssh"), ssh
        answers[ssh] = json.loads(r.stdout)
        nodes = cli(agent_lab, "nodes", "--json", ssh=ssh)
        assert [n["status"] for n in json.loads(nodes.stdout)["nodes"]] == ["up"] * 3
    for answer in answers.values():
        for volume in answer["volumes"]:
            volume.pop("snapshot_age", None)  # seconds: moves between the calls
    assert answers[None] == answers["openssh"] == answers["asyncssh"]
    assert answers[None]["volumes"][0]["primary"] == "node2"


def test_a_bad_choice_of_client_is_one_line_and_changes_nothing(agent_lab: AgentLab) -> None:
    before = agent_lab.zfs_state()
    r = cli(agent_lab, "create", "telnet", "--on", "node1", ssh="telnet")
    assert r.returncode == 2
    assert errors(r) == [
        "zflock: error: ZFLOCK_SSH='telnet': expected one of auto, openssh, asyncssh"
    ]
    assert agent_lab.zfs_state() == before


def test_a_key_others_can_read_goes_through_asyncssh_unless_ssh_is_demanded(
    agent_lab: AgentLab, tmp_path: Path
) -> None:
    key = tmp_path / "id_open"
    identity = load_inventory(agent_lab.cluster_file).identity
    assert identity is not None
    shutil.copy(identity, key)
    key.chmod(0o644)  # ssh ignores such a key; asyncssh does not mind
    r = cli(agent_lab, "nodes", "--json", "--identity", str(key), ssh=None)
    assert r.returncode == 0, errors(r)
    assert loaded_asyncssh(r)
    r = cli(agent_lab, "nodes", "--json", "--identity", str(key), ssh="openssh")
    assert r.returncode == 2
    assert errors(r) == [
        f"zflock: error: ZFLOCK_SSH=openssh, but {key} can be read by other users "
        "(ssh requires mode 0600)"
    ]


def test_a_stopped_agent_is_given_up_within_the_timeout(agent_lab: AgentLab) -> None:
    pid = agent_lab.state.nodes["node3"].processes["agent"].pid
    os.kill(pid, signal.SIGSTOP)  # accepts TCP (the kernel does), never says a word
    try:
        r = cli(agent_lab, "nodes", "--json", "--timeout", "2", ssh="openssh")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.returncode == 1
    rows = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}
    assert rows["node3"]["status"] == "down"
    assert rows["node3"]["error"] == "node node3 unreachable: no answer within 2 s"
    assert rows["node1"]["status"] == rows["node2"]["status"] == "up"
