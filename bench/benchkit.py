"""What the lab benchmarks share: running commands, the lab they bring up, and writing
their own section of docs/benchmarks.md.

bench/ is not a package: each benchmark runs as a script with its own directory first on
sys.path, so `from benchkit import ...` finds this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


def publish(out: str, section: str, begin: str, end: str, before: str) -> None:
    """Put `section` into the file `out` (place_section) and print it."""
    path = Path(out)
    previous = path.read_text() if path.exists() else ""
    path.write_text(place_section(previous, section, begin, end, before))
    print(section)


def place_section(previous: str, section: str, begin: str, end: str, before: str) -> str:
    """Replace the section between `begin` and `end`; or, the first time, put it just
    above the line `before` (another benchmark's marker), or at the end without it."""
    if begin in previous and end in previous:
        return merge_report(previous, section, begin, end)
    if before in previous:
        at = previous.index(before)
        return previous[:at] + section + previous[at:]
    return previous.rstrip("\n") + "\n\n" + section


def proc_cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a running process (its threads included), from
    /proc/PID/stat; with `children`, also those of its children it has waited for."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """Resident memory of a running process, MB (VmRSS of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Lab:
    """A local lab of `nodes` nodes, brought up and torn down by its name."""

    def __init__(self, name: str, nodes: int = 2, arc_size: str | None = None) -> None:
        self.name = name
        self.nodes = nodes
        self.arc_size = arc_size  # each zfs-fuse's ARC cap (`lab up --arc-size`); None: its own
        self.state: Any = None
        self.env: dict[str, str] = {}

    def up(self) -> None:
        arc = ["--arc-size", self.arc_size] if self.arc_size else []
        run([*zflock_argv(), "lab", "up", "--nodes", str(self.nodes), "--name", self.name,
             "--pool-size", "1024M", *arc])  # fmt: skip
        from zflock.lab import load_state
        from zflock.lab.agents import cluster_file

        self.state = load_state(self.name)
        self.env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file(self.state))}
        self.dir.mkdir(exist_ok=True)

    def down(self) -> None:
        subprocess.run([*zflock_argv(), "lab", "down", "--name", self.name], check=False)

    def finish(self, keep: bool) -> None:
        """At a bench's end, whatever happened: take the lab down, or (`keep`, and it
        came up) leave it and say how to take it down."""
        if keep and self.state is not None:
            log(f"lab {self.name} left up: zflock lab down --name {self.name}")
        else:
            self.down()

    @property
    def dir(self) -> Path:
        return Path(self.state.dir) / "bench"  # seen by every node

    def zflock(self, *args: str) -> str:
        return run([*zflock_argv(), *args], env=self.env)

    def exec(self, node: str, *argv: str) -> str:
        return self.zflock("lab", "exec", "--name", self.name, node, "--", *argv)


# -- OpenSSH connections opened before the timing, and the CPU a run used --------------


@dataclass
class SshMaster:
    """An OpenSSH master connection; `argv` runs a command over it (no key exchange)."""

    pid: int
    base: list[str]
    dest: str

    def argv(self, *command: str, options: Sequence[str] = ()) -> list[str]:
        return [*self.base, "-o", "ControlMaster=no", *options, self.dest, *command]


@contextmanager
def ssh_master(
    prefix: Sequence[str], options: Sequence[str], dest: str, control: Path
) -> Iterator[SshMaster]:
    """Open `ssh OPTIONS DEST` as a ControlMaster (run under `prefix`, e.g. inside a node)
    and wait until it answers; closed, and reaped by its handle, on exit.

    A baseline timed over it times the stream, not a key exchange: it makes the
    baseline faster, never slower, so a ratio to it stays honest.
    """
    base = [*prefix, "ssh", *options, "-o", f"ControlPath={control}"]
    master = subprocess.Popen(
        [*base, "-o", "ControlMaster=yes", "-N", dest], stdin=subprocess.DEVNULL
    )
    try:
        end = time.monotonic() + 60
        check = [*base, "-O", "check", dest]
        while subprocess.run(check, capture_output=True, check=False).returncode != 0:
            if master.poll() is not None or time.monotonic() > end:
                raise BenchFailed(f"cannot open an ssh connection to {dest}")
            time.sleep(0.05)
        yield SshMaster(master.pid, base, dest)
    finally:
        subprocess.run([*base, "-O", "exit", dest], capture_output=True, check=False)
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()  # our own child, by its Popen handle
            master.wait()


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every live descendant, with the children each has reaped:
    a forking server's cost, e.g. sshd with its sessions."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0.0
    for pid in tree:
        try:
            total += proc_cpu_seconds(pid, children=True)
        except (OSError, ValueError, IndexError):
            continue
    return total


def peak_rss(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process, in bytes; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) << 10
    except (OSError, ValueError):
        pass
    return 0


def wait_cpu(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Reap our child `proc` (bounded: killed past `timeout`); (exit status, its CPU seconds
    and its reaped children's)."""
    end = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > end:
            proc.kill()
        time.sleep(0.01)
