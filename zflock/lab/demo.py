"""`zflock lab demo`: what an operator would type, run for real in a local lab.

Each step is an ordinary `zflock` command (printed before it runs), against
the lab's inventory, so the demo shows the tool as it is used and doubles as
a smoke test of a fresh checkout.

The story: a volume `web` with data on node1, a service writing to it (the
lab's steady writer: numbered, fsynced records, each acknowledged only once
durable), a warm replica on node2, then `zflock move` under that live
writer. The move's hooks stop the writer before the cutover and start it on
the destination after, as they would stop and start a container. At the end
the writer's log of acknowledged records is checked against the file on the
destination: none may be missing.

Rerunnable: a second run moves the volume back from wherever it is now
(node2 -> node1, and so on).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zflock.errors import ZflockError
from zflock.lab import writer
from zflock.lab.agents import cluster_file
from zflock.lab.state import LabState

Echo = Callable[[str], None]
VOLUME = "web"
NODES = ("node1", "node2")  # the demo moves between these two
WRITER_SECONDS = 1.0  # let the writer run alone before and after the move, to see it steady

# The demo's writes inside the source node: a test-written script, not operator input.
WRITE_DATA = (
    "mkdir -p /zflock/web/site && head -c 64000000 /dev/urandom > /zflock/web/site/blob.bin "
    "&& date -u > /zflock/web/site/index.html"
)
# A rerun appends instead of rewriting: the quota counts the old blocks the
# snapshots keep, and a move only needs some new data to carry.
WRITE_MORE = (
    "mkdir -p /zflock/web/site && head -c 8000000 /dev/urandom >> /zflock/web/site/blob.bin "
    "&& date -u >> /zflock/web/site/index.html"
)
DOWNTIME_RE = re.compile(r"downtime\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b")


class DemoFailed(ZflockError):
    pass


class Demo:
    def __init__(self, state: LabState, echo: Echo) -> None:
        self.state = state
        self.echo = echo
        self.env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file(state))}
        self.name_flag = ["--name", state.name]
        # In the lab's directory: every node sees it (their mount namespaces are
        # copies of the host's), so the writer's log and pidfile survive the move.
        work = Path(state.dir) / "demo"
        work.mkdir(parents=True, exist_ok=True)
        self.acks = str(work / f"{VOLUME}.acks")
        self.pidfile = str(work / f"{VOLUME}.writer.pid")
        self.records = f"{state.mount_root}/{VOLUME}/records"

    # -- running zflock ---------------------------------------------------------------

    def zflock(self, args: Sequence[str], *, capture: bool = False) -> str:
        """Print `zflock ARGS`, run it; DemoFailed if it fails. Returns stdout if captured."""
        self.echo("$ zflock " + " ".join(shlex.quote(a) for a in args))
        # -P: never let the working directory shadow the package (see lab/agents.py).
        done = subprocess.run(
            [sys.executable, "-P", "-m", "zflock", *args],
            env=self.env,
            stdout=subprocess.PIPE if capture else None,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DemoFailed(f"`zflock {' '.join(args)}` failed with exit status {done.returncode}")
        return done.stdout or ""

    def quiet(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """A look-up the demo needs but an operator would not type: not printed."""
        return subprocess.run(
            [sys.executable, "-P", "-m", "zflock", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def on_node(self, node: str, argv: Sequence[str], *, capture: bool = False) -> str:
        return self.zflock(["lab", "exec", *self.name_flag, node, "--", *argv], capture=capture)

    def writer_argv(self, command: str, *args: str) -> list[str]:
        # The venv's Python by absolute path: hooks run with the agent's environment.
        return writer.writer_argv(command, *args)

    def start_argv(self, *, create: bool = False) -> list[str]:
        return self.writer_argv(
            "start",
            "--file",
            self.records,
            "--acks",
            self.acks,
            "--pidfile",
            self.pidfile,
            *(["--create"] if create else []),
        )

    # -- the story --------------------------------------------------------------------

    def primary(self) -> str | None:
        """Where the volume is writable now, None if it does not exist yet."""
        done = self.quiet(["ls", VOLUME, "--json"])
        try:
            # `ls` exits 1 for a volume it cannot find, but still prints its JSON.
            listing: dict[str, Any] = json.loads(done.stdout)
            volumes: list[dict[str, Any]] = listing["volumes"]
        except (ValueError, KeyError):
            raise DemoFailed(f"`zflock ls {VOLUME}` failed: {done.stderr.strip()}") from None
        if listing.get("unreachable"):
            raise DemoFailed(f"a node of the lab does not answer: {listing['unreachable'][0]}")
        if not volumes:
            return None
        primaries = [v["primary"] for v in volumes if v.get("primary")]
        if not primaries:
            # An interrupted move leaves the source fenced; the same command finishes it.
            problems = "; ".join(p for v in volumes for p in v.get("problems", []))
            raise DemoFailed(
                f"{VOLUME} has no writable copy ({problems or 'no primary'}); if a move was "
                f"interrupted, `zflock move {VOLUME} --to NODE` finishes or undoes it, or take "
                "the lab down and run the demo again"
            )
        return str(primaries[0])

    def run(self) -> None:
        echo = self.echo
        echo(
            f"\nThe CLI finds the lab through: export ZFLOCK_CLUSTER={self.env['ZFLOCK_CLUSTER']}\n"
        )
        self.zflock(["nodes"])
        source = self.primary()
        if source is None:
            source = NODES[0]
            self.zflock(["create", VOLUME, "--on", source, "--quota", "512M"])
            self.on_node(source, ["sh", "-c", WRITE_DATA])
        else:
            echo(f"\n{VOLUME} exists already, writable on {source}: this run moves it away.\n")
            self.on_node(source, ["sh", "-c", WRITE_MORE])
        dest = NODES[1] if source != NODES[1] else NODES[0]
        # A writer left by an interrupted run would write into the volume we move.
        writer.stop(self.pidfile)
        with open(self.acks, "w"):  # this run's acknowledgements only
            pass
        echo(
            f"\nA service on {source} appends numbered records to {self.records}; each one "
            f"is fsynced, then acknowledged in {self.acks}:"
        )
        try:
            self.on_node(source, self.start_argv(create=True))
            self.zflock(["replicate", VOLUME, "--to", dest])
            time.sleep(WRITER_SECONDS)
            before = _count(self.acks)
            echo(
                f"\n{before} writes acknowledged so far on {source}. Move the volume under "
                f"the writer: the pre-cutover hook stops it on {source}, the post-cutover "
                f"hook starts it on {dest}.\n"
            )
            out = self.move(dest)
            time.sleep(WRITER_SECONDS)
            after = _count(self.acks)
            echo(
                f"\nThe writer carries on, now on {dest}: "
                f"{after - before} more writes acknowledged.\n"
            )
            self.on_node(dest, self.writer_argv("stop", "--pidfile", self.pidfile))
        finally:
            # Also when a step failed: never leave a writer running in the lab
            # (its PID is a host PID, so the pidfile is enough from here).
            writer.stop(self.pidfile)
        verdict = self.on_node(
            dest,
            self.writer_argv("verify", "--file", self.records, "--acks", self.acks),
            capture=True,
        )
        echo(verdict.strip())
        summary = json.loads(verdict)
        if not summary.get("ok") or summary.get("acked", 0) < 1:
            raise DemoFailed(f"acknowledged writes are missing on {dest}: {verdict.strip()}")
        self.zflock(["ls"])
        downtime = _downtime(out)
        echo(
            f"\nall {summary['acked']} acknowledged writes are on {dest}."
            + (f" The move's downtime: {downtime}." if downtime else "")
        )
        down = "zflock lab down" + (
            "" if self.state.name == "lab" else f" --name {self.state.name}"
        )
        echo(
            f"\n{dest} holds the writable volume at {self.state.mount_root}/{VOLUME}; {source} "
            "a read-only replica (a move back is cheap: run the demo again).\n"
            f"Try: zflock status, zflock move {VOLUME} --to {source} --dry-run, "
            f"zflock lab exec {dest} -- zfs get all tank/zflock/{VOLUME}\n"
            f"Take the lab down with: {down}"
        )

    def move(self, dest: str) -> str:
        """`zflock move` with the writer's hooks; its output is shown and returned.

        Only stdout is piped (to find the downtime in the last line): the live
        display goes to stderr, which stays the terminal's."""
        pre = shlex.join(self.writer_argv("stop", "--pidfile", self.pidfile))
        post = shlex.join(self.start_argv())
        # The same start on the source if the move is undone: the service keeps running.
        args = ["move", VOLUME, "--to", dest, "--pre-hook", pre, "--post-hook", post,
                "--rollback-hook", post]  # fmt: skip
        self.echo("$ zflock " + " ".join(shlex.quote(a) for a in args))
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "zflock", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines = []
        # Line by line as it comes: the move's progress is the point of the demo.
        for line in proc.stdout:
            lines.append(line)
            self.echo(line.rstrip("\n"))
        if proc.wait() != 0:
            raise DemoFailed(f"`zflock move` failed with exit status {proc.returncode}")
        return "".join(lines)


def _count(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _downtime(output: str) -> str | None:
    """The downtime from the move's last line ("..., downtime 0.61 s (epoch 7)")."""
    found = DOWNTIME_RE.findall(output)
    if not found:
        return None
    value, unit = found[-1]
    return f"{value} {unit}"


def run_demo(state: LabState, echo: Echo) -> None:
    Demo(state, echo).run()
