"""A stalled destination (SIGSTOPped, not dead) cannot keep a fenced source waiting.

Every cutover step has a deadline (docs/move.md, "Deadlines"). A real 3-node
lab, every node polled by `one_writable_copy` throughout; node2's agent is
stopped (by the PID the lab recorded) at two points of a move node1 -> node2:

* during the final delta: no promote was asked, so the move must roll back
  within its deadline, and once node2 runs again the same move succeeds;
* while node2 promotes: node2 may be (here: is) writable, so node1 must stay
  fenced whatever its deadlines say; once node2 runs again, node1's agent
  settles the move in the background and demotes itself.

The source's deadlines are shortened here (node1's agent.toml) so that they
fire well before SSH keepalives would notice the stopped peer (about 15 s,
rpc/client.py); the error message then names the deadline, so a deadline
removed on purpose fails the test instead of being rescued by a keepalive.
They are not stretched by ZFLOCK_TEST_SLOWDOWN for the same reason.
The CLI is waited for with a subprocess timeout: a bound, never a measurement.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from tests.move.conftest import (
    Writer,
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

SOURCE_DEADLINES = """
[deadlines]
final_delta = 4.0
promote = 6.0
resolve = 3.0
settle = 8.0
"""


@pytest.fixture(scope="module")
def lab3() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=3, pool_size=1 << 30) as lab:
        node1 = lab.state.nodes["node1"]
        config = agents.agent_dir(node1) / "agent.toml"
        config.write_text(config.read_text() + SOURCE_DEADLINES)
        agents.stop(node1)
        agents.start(lab.state, node1)
        yield lab


class Hold:
    """A hook that blocks until the test releases it: `touch STARTED; cat FIFO`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.started = directory / f"{name}.started"
        self.fifo = directory / f"{name}.fifo"
        os.mkfifo(self.fifo)

    def hook(self) -> str:
        return subprocess.list2cmdline(
            ["sh", "-c", f"touch {self.started} && cat {self.fifo} > /dev/null"]
        )

    def wait(self, what: str, move: subprocess.Popen[str]) -> None:
        wait_until(what, lambda: self.started.exists() or move.poll() is not None, timeout=90)
        if not self.started.exists():
            _, err = move.communicate()
            pytest.fail(f"the move ended before {what}: {err}")

    def release(self) -> None:
        """End the hook's `cat`: open the FIFO's write end (once its reader is there), close it."""

        def opened() -> bool:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader yet
                    return False
                raise
            os.close(fd)
            return True

        wait_until("the held hook to open its FIFO", opened)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """The CLI's exit status and stderr; it must return within a generous bound."""
    try:
        _, err = proc.communicate(timeout=patience(90))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the move did not end while its destination was stopped")
    return proc.returncode, err


def test_destination_stalled_during_the_final_delta_rolls_back(
    lab3: AgentLab, tmp_path: Path
) -> None:
    lab, volume = lab3, "fdstall"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    writer = Writer(lab, volume, tmp_path)
    hold = Hold(tmp_path, "pre")
    stop, start = (subprocess.list2cmdline(a) for a in (writer.stop_argv(), writer.start_argv()))
    with one_writable_copy(lab, volume):
        writer.start("node1")
        writer.wait_acked(20)
        # The last pre-cutover hook holds the source until node2 is stopped; the
        # fence, the final snapshot and the final delta follow at once.
        proc = start_move(lab, volume, "node2", "--pre-hook", stop, "--pre-hook", hold.hook(),
                          "--rollback-hook", start, "--post-hook", start)  # fmt: skip
        hold.wait("the pre-cutover hook held the source", proc)
        with stopped(lab, "node2"):
            hold.release()
            code, err = finish(proc)
            assert code == 1, err
            assert "the final delta made no progress for 4 s" in err, err
            assert "rolled back; the source is writable again" in err, err
            # Rolled back while node2 is still stopped: node1 serves, the writer goes on.
            assert full_state(lab, "node1", volume) == primary(1)
            writer.wait_acked(writer.acked() + 10)
        # node2 runs again: it never promoted, and the same move now succeeds.
        state2 = full_state(lab, "node2", volume)
        assert (state2["role"], state2["readonly"], state2["mounted"]) == ("replica", "on", "no")
        r = move(lab, volume, "node2", *writer.hooks())
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["epoch"] == 2
        writer.wait_acked(writer.acked() + 10)
        writer.stop("node2")
    assert full_state(lab, "node1", volume) == replica(1)  # a demoted copy keeps its epoch
    assert full_state(lab, "node2", volume) == primary(2)
    assert full_state(lab, "node3", volume) == {}
    writer.verify_on("node2")


def test_destination_stalled_while_promoting_keeps_the_source_fenced(
    lab3: AgentLab, tmp_path: Path
) -> None:
    lab, volume = lab3, "pstall"
    assert lab.cli("create", volume, "--on", "node1").returncode == 0
    writer = Writer(lab, volume, tmp_path)
    hold = Hold(tmp_path, "post")
    stop, start = (subprocess.list2cmdline(a) for a in (writer.stop_argv(), writer.start_argv()))
    with one_writable_copy(lab, volume):
        writer.start("node1")
        writer.wait_acked(20)
        # node2's first post-cutover hook holds it inside the promote call, after the
        # point of no return: node2 is writable, its answer not sent.
        proc = start_move(lab, volume, "node2", "--pre-hook", stop, "--post-hook", hold.hook(),
                          "--post-hook", start)  # fmt: skip
        hold.wait("node2 promoted and ran its post-cutover hooks", proc)
        with stopped(lab, "node2"):
            code, err = finish(proc)
            assert code == 1, err
            assert "the promote call to node2 did not finish within 6 s" in err, err
            assert "stays fenced, and its agent keeps settling the move" in err, err
            # In doubt, so fenced: node1 never unfences while node2 may have promoted.
            state1 = full_state(lab, "node1", volume)
            assert (state1["role"], state1["readonly"], state1["epoch"]) == ("primary", "on", "1")
            assert state1["move"].startswith("promoting/"), state1
            assert full_state(lab, "node2", volume)["readonly"] == "off"
        hold.release()
        # node2 runs again and finishes promoting; node1's agent, which kept asking in
        # the background, learns it and demotes its copy.
        wait_until("node1 to settle the move", lambda: full_state(lab, "node1", volume)
                   .get("move") == "-", timeout=150)  # fmt: skip
        writer.wait_acked(writer.acked() + 10)
        writer.stop("node2")
    assert full_state(lab, "node1", volume) == replica(1)  # a demoted copy keeps its epoch
    assert full_state(lab, "node2", volume) == primary(2)
    assert full_state(lab, "node3", volume) == {}
    writer.verify_on("node2")
    ls = json.loads(lab.cli("ls", volume, "--json").stdout)["volumes"][0]
    # One primary. (node1 may carry a stale label, depending on which answer its
    # background settle heard first: node2's resolve or node2's higher epoch.)
    assert ls["primary"] == "node2", ls
    assert not [p for p in ls["problems"] if "primary" in p], ls
