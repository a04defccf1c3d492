"""What the lab benchmarks share: running commands, the lab they bring up, and writing
their own section of docs/benchmarks.md.

bench/ is not a package: each benchmark runs as a script with its own directory first on
sys.path, so `from benchkit import ...` finds this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PY = sys.executable
OTHER_BENCHMARKS = "<!-- other benchmarks: kept by move_bench.py -->"


class BenchFailed(Exception):
    pass


def log(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command to its end (bounded); its last stderr line names a failure."""
    r = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchFailed(f"{' '.join(argv[:6])}...: {last}")
    return r.stdout


def zflock_argv() -> list[str]:
    # -P: the bench's own directory must never shadow anything on sys.path.
    return [PY, "-P", "-m", "zflock"]


def writer_argv(command: str, *args: str) -> list[str]:
    return [PY, "-P", "-m", "zflock.lab.writer", command, *args]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def merge_report(previous: str, section: str, begin: str, end: str) -> str:
    """Replace the section between `begin` and `end`, or add it below the other
    benchmarks' marker (move_bench.py rewrites what is above that marker)."""
    if begin in previous and end in previous:
        start, stop = previous.index(begin), previous.index(end) + len(end) + 1
        return previous[:start] + section + previous[stop:]
    if OTHER_BENCHMARKS in previous:
        return previous.rstrip("\n") + "\n\n" + section
    return previous + "\n" + OTHER_BENCHMARKS + "\n" + section


class Lab:
    """A local lab of `nodes` nodes, brought up and torn down by its name."""

    def __init__(self, name: str, nodes: int = 2) -> None:
        self.name = name
        self.nodes = nodes
        self.state: Any = None
        self.env: dict[str, str] = {}

    def up(self) -> None:
        run([*zflock_argv(), "lab", "up", "--nodes", str(self.nodes), "--name", self.name,
             "--pool-size", "1024M"])  # fmt: skip
        from zflock.lab import load_state
        from zflock.lab.agents import cluster_file

        self.state = load_state(self.name)
        self.env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file(self.state))}
        self.dir.mkdir(exist_ok=True)

    def down(self) -> None:
        subprocess.run([*zflock_argv(), "lab", "down", "--name", self.name], check=False)

    @property
    def dir(self) -> Path:
        return Path(self.state.dir) / "bench"  # seen by every node

    def zflock(self, *args: str) -> str:
        return run([*zflock_argv(), *args], env=self.env)

    def exec(self, node: str, *argv: str) -> str:
        return self.zflock("lab", "exec", "--name", self.name, node, "--", *argv)
