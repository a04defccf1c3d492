"""The source's agent killed inside a cutover, where its move marker is written beside
other work (zflock.move.driver.Move._beside; docs/move.md, "States on disk"):

* while the pre-cutover hooks run: the marker says `fenced`, and the source is still
  writable. The restarted agent rolls the move back: the source stays the writable
  primary, the marker goes, and the rollback hooks run (the pre-cutover hooks may have
  stopped the consumer). Before the marker went on beside the hooks, a crash there
  left a stopped consumer and nothing on disk to say so.
* while the final delta streams (stalled: the destination's agent is SIGSTOPped): the
  marker says `promoting` already. The restarted agent cannot roll back on its own: it
  asks the destination, and while that one cannot answer, the source stays fenced.
  Once it runs again it answers "aborted" (and will refuse a late promote for the
  move), and the source rolls back.

Three nodes, each copy polled by `one_writable_copy` throughout. The rollback hooks
are node1's configured ones (a recovery runs no hooks given on a command line):
each touches a file named after its volume.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from tests.move.conftest import (
    copy_state,
    full_state,
    move,
    one_writable_copy,
    primary,
    replica,
    start_move,
    stopped,
)
from zflock.lab import agents

pytestmark = pytest.mark.lab

VOLUMES = ("hookcrash", "deltacrash")


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentLab, Path]]:
    """The lab, and the directory where node1's rollback hooks leave their files."""
    marks = tmp_path_factory.mktemp("rolled-back")
    with agent_lab_session(nodes=3, pool_size=1 << 30) as lab:
        node1 = lab.state.nodes["node1"]
        config = agents.agent_dir(node1) / "agent.toml"
        hooks = "".join(
            f'\n[volumes.{v}.hooks]\nrollback = ["touch", "{marks / v}"]\n' for v in VOLUMES
        )
        config.write_text(config.read_text() + hooks)
        agents.stop(node1)
        agents.start(lab.state, node1)
        yield lab, marks


def gate_hook(started: Path, gate: Path) -> str:
    """A hook that says it started, then waits for `gate` (giving up after 60 s by itself,
    so that one orphaned by a killed agent ends too)."""
    wait = (
        f"touch {started}; i=0; "
        f"while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
    )
    return subprocess.list2cmdline(["sh", "-c", wait])


def held_move(lab: AgentLab, volume: str, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """Create `volume` on node1 and start its move to node2; return once the move's
    pre-cutover hook runs, held until the returned gate file exists."""
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    started, gate = tmp_path / "started", tmp_path / "gate"
    proc = start_move(lab, volume, "node2", "--pre-hook", gate_hook(started, gate))
    try:
        wait_until("the pre-cutover hook to start", started.exists)
    except BaseException:
        gate.touch()
        raise
    return proc, gate


def marker(lab: AgentLab, volume: str) -> str:
    return copy_state(lab, "node1", volume).get("zflock:move", "-")


def killed(lab: AgentLab, proc: subprocess.Popen[str]) -> None:
    """SIGKILL node1's agent (by its recorded PID); the CLI following the move fails."""
    lab.kill_agent("node1")
    proc.communicate(timeout=patience(60))
    assert proc.returncode == 1


def recovery_said(lab: AgentLab, volume: str, action: str) -> bool:
    log = agents.agent_log(lab.state.nodes["node1"]).read_text()
    return any(
        f"volume={volume} " in line and "interrupted move" in line and f": {action} (" in line
        for line in log.splitlines()
    )


def test_killed_while_the_pre_cutover_hooks_run_rolls_back(
    lab3: tuple[AgentLab, Path], tmp_path: Path
) -> None:
    lab, marks = lab3
    volume = "hookcrash"
    with one_writable_copy(lab, volume):
        proc, gate = held_move(lab, volume, tmp_path)
        try:
            wait_until("the marker", lambda: marker(lab, volume).startswith("fenced/"))
            s = copy_state(lab, "node1", volume)
            assert (s["readonly"], s["mounted"], s["zflock:role"]) == ("off", "yes", "primary")
            killed(lab, proc)
        finally:
            gate.touch()
        assert not (marks / volume).exists()
        agents.start(lab.state, lab.state.nodes["node1"])
        wait_until("node1's recovery to run the rollback hook", (marks / volume).exists,
                   timeout=patience(60))  # fmt: skip
        wait_until("the marker to go", lambda: marker(lab, volume) == "-")
        assert recovery_said(lab, volume, "roll back")
        assert full_state(lab, "node1", volume) == primary(1)
        assert full_state(lab, "node2", volume) == replica(1)
        # Whole again: the same move now succeeds.
        r = move(lab, volume, "node2")
        assert r.returncode == 0, r.stderr
    assert full_state(lab, "node1", volume) == replica(1)
    assert full_state(lab, "node2", volume) == primary(2)


def test_killed_during_the_final_delta_waits_for_the_destination_then_rolls_back(
    lab3: tuple[AgentLab, Path], tmp_path: Path
) -> None:
    lab, marks = lab3
    volume = "deltacrash"
    with one_writable_copy(lab, volume):
        proc, gate = held_move(lab, volume, tmp_path)
        try:
            with stopped(lab, "node2"):
                gate.touch()  # fence, final snapshot, and a final delta that stalls
                wait_until("the marker to say promoting",
                           lambda: marker(lab, volume).startswith("promoting/"))  # fmt: skip
                killed(lab, proc)
                s = copy_state(lab, "node1", volume)
                assert (s["readonly"], s["zflock:role"], s["zflock:epoch"]) == (
                    "on", "primary", "1",
                )  # fmt: skip
                move_id = s["zflock:move"].split("/")[1]
                # Restarted while node2 cannot answer: it may not roll back on its own.
                agents.start(lab.state, lab.state.nodes["node1"])
                wait_until("node1's recovery to give up asking, for now",
                           lambda: recovery_said(lab, volume, "wait"),
                           timeout=patience(60))  # fmt: skip
                s = copy_state(lab, "node1", volume)
                assert (s["readonly"], s["zflock:move"].split("/")[0]) == ("on", "promoting")
                assert not (marks / volume).exists()
        finally:
            gate.touch()
        # node2 runs again and answers "aborted"; node1 rolls back in the background.
        wait_until("node1 to roll back", lambda: marker(lab, volume) == "-", timeout=150)
        wait_until("the rollback hook", (marks / volume).exists)
        assert full_state(lab, "node1", volume) == primary(1)
        assert full_state(lab, "node2", volume) == replica(1)
        aborted = lab.zget("node2", lab.ds("node2", volume), "zflock:aborted-move")
        assert move_id in aborted["zflock:aborted-move"].split(","), aborted
        r = move(lab, volume, "node2")
        assert r.returncode == 0, r.stderr
    assert full_state(lab, "node1", volume) == replica(1)
    assert full_state(lab, "node2", volume) == primary(2)
