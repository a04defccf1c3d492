"""The Ansible role on three systemd containers, and the agent under real systemd.

One deployment per module, in order: bad input first (on untouched hosts: the
play fails early and changes nothing), then converge, a second run that
changes nothing, and checks from the controller and inside the nodes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentlab import patience, wait_until
from tests.deploy.ansible_run import Controller, recap
from tests.deploy.cluster import REPO, DeployLab, Node, build_image, run

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    work = tmp_path_factory.mktemp("deploy")
    wheelhouse = work / "wheelhouse"
    # Built from this checkout on the controller, with every dependency: the
    # nodes have no route out of the namespace, so they install offline.
    run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), str(REPO)], timeout=600)
    key = work / "id_ed25519"
    run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f", str(key)],
        timeout=30,
    )
    lab = DeployLab(work)
    try:
        tarball = build_image()
        lab.start_dockerd()
        image = lab.import_image(tarball)
        lab.start_nodes(image, Path(f"{key}.pub").read_text())
        for node in lab.nodes.values():
            lab.exec(node, "truncate", "-s", "1G", "/var/lib/tank.img")
            lab.exec(node, "zpool", "create", "-f", "tank", "/var/lib/tank.img")
        yield Controller(lab, key, wheelhouse)
    finally:
        lab.down()


def untouched(c: Controller) -> None:
    for node in c.lab.nodes.values():
        for path in ("/etc/zflock", "/opt/zflock", "/usr/local/bin/zflock", "/var/lib/zflock"):
            assert c.lab.exec(node, "test", "-e", path, check=False).returncode != 0, (
                f"{node.name}: {path} exists after a refused play"
            )
        datasets = c.lab.exec(node, "zfs", "list", "-H", "-o", "name").stdout.split()
        assert datasets == ["tank"], f"{node.name}: {datasets}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_pool", 'pool "nosuchpool" (from zflock_pool_root) does not exist'),
        ("unknown_value", "value of zflock_install_from must be one of"),
        ("no_address", "no address for node3: set zflock_address"),
    ],
)
def test_bad_input_fails_early_and_changes_nothing(
    controller: Controller, tmp_path: Path, case: str, expected: str
) -> None:
    hosts = controller.hosts()
    overrides: dict[str, object] = {}
    if case == "missing_pool":
        overrides["zflock_pool_root"] = "nosuchpool/zflock"
    elif case == "unknown_value":
        overrides["zflock_install_from"] = "ftp"
    else:
        hosts["node3"] = {}
    inventory = controller.inventory(tmp_path / "bad.yml", hosts=hosts, **overrides)
    result = controller.playbook(inventory)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert expected in " ".join(output.split()), output[-3000:]
    counters = recap(output)
    assert counters, output[-3000:]
    assert all(c["changed"] == 0 for c in counters.values()), counters
    untouched(controller)


@pytest.fixture(scope="module")
def deployed(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Controller:
    inventory = controller.inventory(
        tmp_path_factory.mktemp("inv") / "hosts.yml", hosts=controller.hosts()
    )
    first = controller.playbook(inventory)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    assert any(c["changed"] > 0 for c in recap(first.stdout).values())
    second = controller.playbook(inventory)
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    counters = recap(second.stdout)
    assert set(counters) == {"node1", "node2", "node3"}
    assert all(c["changed"] == 0 for c in counters.values()), (counters, second.stdout[-5000:])
    controller.inventory_file = inventory
    return controller


def test_converge_is_idempotent(deployed: Controller) -> None:
    """The fixture's second run reported changed=0 on every node."""


# -- from the controller ---------------------------------------------------------------


def cli(c: Controller, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cluster = c.lab.work / "cluster.toml"
    if not cluster.exists():
        node1 = c.lab.nodes["node1"]
        text = c.lab.exec(node1, "cat", "/etc/zflock/cluster.toml").stdout
        lines = [ln for ln in text.splitlines() if not ln.startswith("identity")]
        cluster.write_text(f'identity = "{c.key}"\n' + "\n".join(lines) + "\n")
    argv = c.lab.in_netns(sys.executable, "-m", "zflock", *args, "--cluster", str(cluster))
    return run(argv, timeout=patience(300), check=check, cwd=str(REPO))


def test_controller_sees_three_healthy_agents(deployed: Controller) -> None:
    nodes = json.loads(cli(deployed, "nodes", "--json").stdout)["nodes"]
    assert sorted(n["node"] for n in nodes) == ["node1", "node2", "node3"]
    assert all(n["status"] == "up" for n in nodes), nodes
    assert {n["zfs_implementation"] for n in nodes} == {"zfs-fuse"}


def primary(c: Controller, volume: str) -> str:
    rows = json.loads(cli(c, "ls", volume, "--json").stdout)
    rows = rows["volumes"] if isinstance(rows, dict) else rows
    return str(rows[0]["primary"])


def test_volume_created_replicated_and_moved(deployed: Controller) -> None:
    lab = deployed.lab
    n1, n2 = lab.nodes["node1"], lab.nodes["node2"]
    cli(deployed, "create", "web", "--on", "node1")
    lab.exec(n1, "sh", "-c", "echo hello from node1 > /zflock/web/index.html")
    cli(deployed, "replicate", "web", "--to", "node2")
    snapshots = lab.exec(
        n2, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", "tank/zflock/web"
    )
    assert snapshots.stdout.strip(), "no replica snapshot on node2"
    cli(deployed, "move", "web", "--to", "node2")
    assert lab.exec(n2, "cat", "/zflock/web/index.html").stdout == "hello from node1\n"
    assert primary(deployed, "web") == "node2"


# -- systemd ----------------------------------------------------------------------------


def show(c: Controller, node: Node, *props: str) -> dict[str, str]:
    argv = ["systemctl", "show", "zflock-agent", *(f"--property={p}" for p in props)]
    out = c.lab.exec(node, *argv).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(c: Controller, node: Node, *match: str) -> list[dict[str, str]]:
    out = c.lab.exec(node, "journalctl", "--no-pager", "-o", "json", *match).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_journal_carries_the_volume_as_a_field(deployed: Controller) -> None:
    entries = journal(
        deployed, deployed.lab.nodes["node1"], "-u", "zflock-agent", "ZFLOCK_VOLUME=web"
    )
    assert entries, "no journal entry with ZFLOCK_VOLUME=web"
    assert any(e.get("ZFLOCK_OP") == "create_volume" for e in entries), entries[:3]
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"zflock-agent"}


def test_notify_readiness(deployed: Controller) -> None:
    """Type=notify: `systemctl restart` returns only once the agent serves."""
    node = deployed.lab.nodes["node3"]
    assert show(deployed, node, "Type")["Type"] == "notify"
    deployed.lab.exec(node, "systemctl", "restart", "zflock-agent")
    # No retry: with READY=1 sent after listening, the agent answers at once.
    deployed.lab.exec(node, "/usr/local/bin/zflock", "nodes")
    entries = journal(deployed, node, "-b", "_SYSTEMD_UNIT=init.scope", "UNIT=zflock-agent.service")
    listening = [
        e for e in journal(deployed, node, "-u", "zflock-agent") if "listening on" in e["MESSAGE"]
    ]
    started = [e for e in entries if e["MESSAGE"].startswith("Started")]
    assert listening and started
    assert int(listening[-1]["__REALTIME_TIMESTAMP"]) <= int(started[-1]["__REALTIME_TIMESTAMP"])


def test_sigterm_sends_stopping_and_lets_a_move_finish(deployed: Controller) -> None:
    lab = deployed.lab
    n1 = lab.nodes["node1"]
    cli(deployed, "create", "db", "--on", "node1")
    lab.exec(n1, "sh", "-c", "echo rows > /zflock/db/data")
    pid = show(deployed, n1, "MainPID")["MainPID"]
    try:
        sigterm_during_a_move(deployed, pid)
    finally:
        lab.exec(n1, "systemctl", "start", "zflock-agent")


def sigterm_during_a_move(deployed: Controller, pid: str) -> None:
    lab = deployed.lab
    n1 = lab.nodes["node1"]
    move = subprocess.Popen(
        lab.in_netns(
            sys.executable, "-m", "zflock", "move", "db", "--to", "node3",
            "--pre-hook", "sleep 20", "--cluster", str(lab.work / "cluster.toml"),
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
    )  # fmt: skip
    try:
        wait_until(
            "the pre-cutover hook to run on node1",
            lambda: lab.exec(n1, "pgrep", "-x", "sleep", check=False).returncode == 0,
            timeout=120,
            interval=0.2,
        )
        # SIGTERM straight to the agent, not through systemctl: only STOPPING=1
        # can tell systemd that the service is going down.
        lab.exec(n1, "kill", "-TERM", pid)
        wait_until(
            "systemd to see STOPPING=1 (deactivating)",
            lambda: show(deployed, n1, "ActiveState")["ActiveState"] == "deactivating",
            timeout=5,
            interval=0.1,
        )
        _out, err = move.communicate(timeout=patience(300))
    finally:
        if move.poll() is None:
            move.kill()
            move.wait()
    assert move.returncode == 0, err
    assert lab.exec(lab.nodes["node3"], "cat", "/zflock/db/data").stdout == "rows\n"
    wait_until(
        "the agent to stop",
        lambda: show(deployed, n1, "ActiveState")["ActiveState"] in ("inactive", "failed"),
        timeout=60,
        interval=0.2,
    )
    # A clean stop (exit 0) is not a failure: Restart=on-failure leaves it down.
    state = show(deployed, n1, "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    messages = [e["MESSAGE"] for e in journal(deployed, n1, "-u", "zflock-agent", "_PID=" + pid)]
    waited = [m for m in messages if re.search(r"stopping: [1-9]\d* operation\(s\) running", m)]
    assert waited, messages[-10:]
    done = [m for m in messages if "move: done" in m]
    assert done and messages.index(done[-1]) > messages.index(waited[0]), messages[-10:]


def test_kill_9_is_restarted(deployed: Controller) -> None:
    lab = deployed.lab
    node = lab.nodes["node2"]
    before = show(deployed, node, "MainPID", "NRestarts")
    lab.exec(node, "kill", "-KILL", before["MainPID"])

    def restarted() -> bool:
        now = show(deployed, node, "MainPID", "NRestarts", "ActiveState")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

    wait_until("systemd to restart the killed agent", restarted, timeout=60, interval=0.5)
    assert int(show(deployed, node, "NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
    lab.exec(node, "/usr/local/bin/zflock", "nodes")


def test_bad_config_exit_2_is_not_restarted_and_the_role_repairs_it(deployed: Controller) -> None:
    lab = deployed.lab
    node = lab.nodes["node3"]
    lab.exec(node, "sh", "-c", "echo 'no_such_key = 1' >> /etc/zflock/agent.toml")
    restarts = int(show(deployed, node, "NRestarts")["NRestarts"])
    assert lab.exec(node, "systemctl", "restart", "zflock-agent", check=False).returncode != 0
    wait_until(
        "the agent to fail",
        lambda: show(deployed, node, "ActiveState")["ActiveState"] == "failed",
        timeout=60,
        interval=0.2,
    )
    time.sleep(8)  # longer than RestartSec=5: a restart would have happened by now
    state = show(deployed, node, "ActiveState", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "ExecMainStatus": "2", "NRestarts": str(restarts)}
    errors = journal(deployed, node, "-u", "zflock-agent", "-p", "err")
    assert any("no_such_key" in e["MESSAGE"] for e in errors), errors[-3:]

    # The role puts agent.toml back and restarts the agent through its handler;
    # nothing else changes.
    assert deployed.inventory_file is not None
    result = deployed.playbook(deployed.inventory_file)
    assert result.returncode == 0, result.stdout[-5000:]
    counters = recap(result.stdout)
    # agent.toml, and the start or the handler's restart
    assert counters["node3"]["changed"] >= 2, result.stdout[-5000:]
    assert counters["node1"]["changed"] == counters["node2"]["changed"] == 0
    assert show(deployed, node, "ActiveState")["ActiveState"] == "active"
