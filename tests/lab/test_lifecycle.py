"""`lab up` / `lab down` through the CLI, from new processes: idempotent, leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.helpers import Machine, zflock
from zflock import lab as labapi
from zflock.lab import LabState, procs
from zflock.lab.plan import DEFAULT_ROOT

pytestmark = pytest.mark.lab


def recorded_pids(state: LabState) -> list[procs.ProcessRecord]:
    return [rec for node in state.nodes.values() for rec in node.processes.values()]


def assert_gone(name: str, state: LabState, before: Machine) -> None:
    """Nothing of lab `name` is left: namespaces, links, mounts, processes, files."""
    after = Machine.now().of_lab(name, state.dir)
    assert after == before.of_lab(name, state.dir)
    assert after == Machine(frozenset(), frozenset(), frozenset())
    for rec in recorded_pids(state):
        assert not procs.is_running(rec), f"pid {rec.pid} still running"
    assert not state.dir.exists()
    assert not state.state_file.exists()
    assert labapi.find_state(name) is None


def start_in_node(state: LabState, node: str, *argv: str) -> subprocess.Popen[bytes]:
    """A process the lab did not record: an operator's session inside a node."""
    return subprocess.Popen(
        [*labapi.node_prefix(state, node), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_up_exec_down_twice_from_new_processes(needs_lab: None, lab_name: str) -> None:
    before = Machine.now()
    for round_ in (1, 2):
        r = zflock("lab", "up", "--nodes", "3", "--name", lab_name, "--pool-size", "256M")
        assert r.returncode == 0, r.stderr
        assert f"lab '{lab_name}' is up" in r.stdout
        assert "zflock lab exec" in r.stdout and "ssh -F" in r.stdout  # how to use it
        state = labapi.load_state(lab_name)
        # Everything the lab made is visible on the host while it is up
        # (so the "nothing left" checks below can fail).
        up_now = Machine.now().of_lab(lab_name, state.dir)
        assert up_now.netns == {n.netns for n in state.nodes.values()}
        assert up_now.links == set(state.links)
        assert len(up_now.mounts) == 3  # /run/netns/<netns> bind mounts
        assert all(procs.is_running(rec) for rec in recorded_pids(state))
        if round_ == 1:
            r = zflock("lab", "up", "--nodes", "3", "--name", lab_name)
            assert r.returncode == 0 and "already up" in r.stdout, r.stderr
            assert labapi.load_state(lab_name).to_json() == state.to_json()

        r = zflock("lab", "exec", "--name", lab_name, "node2", "--", "zpool", "list")
        assert r.returncode == 0, r.stderr
        assert state.nodes["node2"].pool in r.stdout and "ONLINE" in r.stdout

        # Sessions the lab did not start: an ssh login and a `lab exec` command.
        ssh = subprocess.Popen(
            labapi.ssh_argv(state, "node1", "sleep", "300"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        inside = start_in_node(state, "node3", "sleep", "300")
        try:
            time.sleep(0.5)  # let the ssh session start on node1
            assert ssh.poll() is None and inside.poll() is None
            r = zflock("lab", "down", "--name", lab_name)
            assert r.returncode == 0, r.stderr
            assert "is down" in r.stdout
            assert inside.wait(timeout=10) == -signal.SIGKILL
            ssh.wait(timeout=10)  # its server side is gone, so it ends
        finally:
            for p in (ssh, inside):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert_gone(lab_name, state, before)
        r = zflock("lab", "down", "--name", lab_name)
        assert r.returncode == 0 and "not up; nothing to do" in r.stdout, r.stderr
        assert_gone(lab_name, state, before)


CRASH_SCRIPT = """
import os, signal, sys
from zflock.lab import lab_up
def crash(state):  # a hard crash right after the pools, before sshd
    os.kill(os.getpid(), signal.SIGKILL)
lab_up._start_sshds = crash
lab_up.up(sys.argv[1], 2, pool_size=128 << 20)
"""


def test_crash_during_up_can_be_torn_down(needs_lab: None, lab_name: str) -> None:
    before = Machine.now()
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, lab_name], capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = labapi.load_state(lab_name)
    try:
        assert not state.complete
        assert all(procs.is_running(n.processes[n.namespace_role]) for n in state.nodes.values())
        assert all("sshd" not in n.processes for n in state.nodes.values())

        r = zflock("lab", "status", "--name", lab_name, "--json")
        assert r.returncode == 0
        assert json.loads(r.stdout)["healthy"] is False
        r = zflock("lab", "status", "--name", lab_name)
        assert r.returncode == 1 and "sshd was never started" in r.stdout
        r = zflock("lab", "up", "--nodes", "2", "--name", lab_name)
        assert r.returncode == 1
        assert "only partly up" in r.stderr and "zflock lab down" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        r = zflock("lab", "down", "--name", lab_name)
    assert r.returncode == 0, r.stderr
    assert_gone(lab_name, state, before)


def test_failed_up_removes_what_it_made(
    needs_lab: None, lab_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zflock.errors import ZflockError
    from zflock.lab import lab_up

    before = Machine.now()
    made: list[LabState] = []

    def broken(state: LabState) -> None:
        made.append(state)
        raise ZflockError("sshd exploded")

    monkeypatch.setattr(lab_up, "_start_sshds", broken)
    with pytest.raises(ZflockError, match="sshd exploded"):
        labapi.up(lab_name, 2, pool_size=128 << 20)
    (state,) = made
    node1 = state.nodes["node1"]
    assert node1.processes[node1.namespace_role].pid > 0  # it got that far
    assert_gone(lab_name, state, before)


def test_a_dead_sshd_shows_in_status_and_blocks_up(needs_lab: None, lab_name: str) -> None:
    before = Machine.now()
    state = labapi.up(lab_name, 1, pool_size=128 << 20)
    try:
        sshd = state.nodes["node1"].processes["sshd"]
        procs.stop(sshd)
        r = zflock("lab", "status", "--name", lab_name)
        assert r.returncode == 1
        assert f"{sshd.pid} DOWN" in r.stdout
        assert f"node1: sshd (pid {sshd.pid}) is not running" in r.stdout
        r = zflock("lab", "up", "--nodes", "1", "--name", lab_name)
        assert r.returncode == 1 and "only partly up" in r.stderr
    finally:
        assert labapi.down(lab_name) is True
    assert_gone(lab_name, state, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Bad_Name"], "invalid lab name 'Bad_Name': character 'B' not allowed"),
        (["--name", "waytoolonglab"], "at most 10 characters"),
        (["--name", "9lab"], "must start with a letter"),
        (["--nodes", "0"], "invalid node count 0: must be between 1 and 16"),
        (["--nodes", "50"], "invalid node count 50: must be between 1 and 16"),
        (["--pool-size", "12"], "invalid pool size '12'"),
        (["--arc-size", "99G"], "invalid ARC size '99G': between 16M and 16G"),
        (["--arc-size", "lots"], "invalid ARC size 'lots'"),
    ],
)
def test_bad_input_is_a_usage_error_and_creates_nothing(
    lab_name: str, args: list[str], message: str
) -> None:
    before = Machine.now()
    full = ["--name", lab_name, *args] if "--name" not in args else args
    r = zflock("lab", "up", *full)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert Machine.now().of_lab(lab_name, DEFAULT_ROOT / lab_name) == before.of_lab(
        lab_name, DEFAULT_ROOT / lab_name
    )
    assert not (DEFAULT_ROOT / f"{lab_name}.json").exists()


def test_the_arc_size_reaches_every_zfs_fuse_and_the_state_file(
    needs_lab: None, lab_name: str
) -> None:
    before = Machine.now()
    r = zflock("lab", "up", "--nodes", "2", "--name", lab_name, "--pool-size", "128M",
               "--arc-size", "256M")  # fmt: skip
    state = labapi.find_state(lab_name)
    try:
        assert r.returncode == 0, r.stderr
        assert state is not None and state.arc_size == 256 << 20
        for node in state.nodes.values():
            pid = node.processes["zfs-fuse"].pid
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[0].endswith(b"zfs-fuse"), argv
            assert b"--max-arc-size" in argv and argv[argv.index(b"--max-arc-size") + 1] == b"256"
    finally:
        assert labapi.down(lab_name) is True
    if state is not None:
        assert_gone(lab_name, state, before)


def test_down_and_status_of_a_lab_that_is_not_up(lab_name: str) -> None:
    r = zflock("lab", "down", "--name", lab_name)
    assert r.returncode == 0 and "not up; nothing to do" in r.stdout
    r = zflock("lab", "status", "--name", lab_name)
    assert r.returncode == 1 and f"lab '{lab_name}' is not up" in r.stderr
    r = zflock("lab", "exec", "--name", lab_name, "node1", "--", "true")
    assert r.returncode == 1 and f"lab '{lab_name}' is not up" in r.stderr


def test_without_root_up_fails_with_one_line(needs_lab: None, lab_name: str) -> None:
    before = Machine.now()
    # Run the CLI as `nobody`: it must say root is needed and create nothing.
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            sys.executable, "-m", "zflock", "lab", "up", "--name", lab_name]  # fmt: skip
    env = {**os.environ, "HOME": "/nonexistent"}
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, cwd=Path(__file__).parents[2]
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == (
        "zflock: error: zflock lab needs root (network namespaces, FUSE and mounts); run it as root"
    )
    assert Machine.now().of_lab(lab_name, DEFAULT_ROOT / lab_name) == before.of_lab(
        lab_name, DEFAULT_ROOT / lab_name
    )
