"""A 2-node lab with agents for the move tests of one module, and what they share."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from zflock import lab as zlab
from zflock.lab.writer import verify_data, writer_argv


@pytest.fixture(scope="module")
def agent_lab() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=2, pool_size=1 << 30) as lab:
        yield lab


@dataclass
class Writer:
    """The lab writer for one volume: started in a node, and moved with it by hooks."""

    lab: AgentLab
    volume: str
    dir: Path  # on the host's filesystem, which every node sees

    @property
    def records(self) -> str:
        return f"/zflock/{self.volume}/records"

    @property
    def acks(self) -> Path:
        return self.dir / "acks"

    @property
    def pidfile(self) -> Path:
        return self.dir / "writer.pid"

    def start_argv(self, *, create: bool = False) -> list[str]:
        extra = ["--create"] if create else []
        return writer_argv("start", "--file", self.records, "--acks", str(self.acks),
                           "--pidfile", str(self.pidfile), *extra)  # fmt: skip

    def stop_argv(self) -> list[str]:
        return writer_argv("stop", "--pidfile", str(self.pidfile))

    def hooks(self) -> list[str]:
        """`zflock move` options that stop the writer on the source and start it on the
        destination, as an operator would stop and start a container."""
        return [
            "--pre-hook", subprocess.list2cmdline(self.stop_argv()),
            "--post-hook", subprocess.list2cmdline(self.start_argv()),
            "--rollback-hook", subprocess.list2cmdline(self.start_argv()),
        ]  # fmt: skip

    def start(self, node: str) -> None:
        r = self.lab.node_run(node, *self.start_argv(create=True))
        assert r.returncode == 0, r.stderr

    def stop(self, node: str) -> None:
        r = self.lab.node_run(node, *self.stop_argv())
        assert r.returncode == 0, r.stderr

    def acked(self) -> int:
        return len(self.acks.read_text().split()) if self.acks.exists() else 0

    def wait_acked(self, more_than: int, timeout: float = 30) -> None:
        wait_until("the writer to acknowledge more", lambda: self.acked() > more_than, timeout)

    def verify_on(self, node: str) -> dict[str, object]:
        """Every acknowledged record is in the volume's file on `node`, byte for byte."""
        # Acknowledgements first: a record is in the file before its ack is logged,
        # so a writer still running cannot make this read look like a loss.
        acks = self.acks.read_bytes()
        records = self.lab.node_run(node, "cat", self.records)
        assert records.returncode == 0, records.stderr
        verdict = verify_data(records.stdout.encode(), acks)
        assert verdict.ok, verdict.summary()
        assert verdict.acked > 0
        return verdict.summary()


@pytest.fixture
def writer_dir(tmp_path: Path) -> Path:
    # tmp_path is on the host's filesystem: both nodes' mount namespaces see it.
    return tmp_path


COPY_PROPERTIES = (
    "zflock:role,zflock:epoch,readonly,canmount,mounted,zflock:move,zflock:id,"
    "zflock:promoted-by,zflock:stale"
)


def copy_state(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    """role, epoch, readonly, canmount, mounted, the move marker, promoted-by and the
    stale label of one copy ({} if absent)."""
    r = lab.node_run(
        node, "zfs", "get", "-H", "-p", "-o", "property,value", COPY_PROPERTIES,
        lab.ds(node, volume),
    )  # fmt: skip
    if r.returncode != 0:
        return {}
    return dict(line.split("\t", 1) for line in r.stdout.splitlines())


def full_state(lab: AgentLab, node: str, volume: str) -> dict[str, str]:
    """role, epoch, readonly, canmount, mounted and marker of one copy ({} if absent)."""
    state = copy_state(lab, node, volume)
    if not state:
        return {}
    return {
        "role": state["zflock:role"],
        "epoch": state["zflock:epoch"],
        "readonly": state["readonly"],
        "canmount": state["canmount"],  # copy_state reads it with the rest
        "mounted": state["mounted"],
        "move": state["zflock:move"],
    }


def primary(epoch: int) -> dict[str, str]:
    return {"role": "primary", "epoch": str(epoch), "readonly": "off", "canmount": "on",
            "mounted": "yes", "move": "-"}  # fmt: skip


def replica(epoch: int) -> dict[str, str]:
    return {"role": "replica", "epoch": str(epoch), "readonly": "on", "canmount": "noauto",
            "mounted": "no", "move": "-"}  # fmt: skip


@contextmanager
def stopped(lab: AgentLab, node: str) -> Iterator[None]:
    """node's agent SIGSTOPped (by its recorded PID), always continued."""
    pid = lab.agent_pid(node)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def assert_copies(
    lab: AgentLab,
    volume: str,
    primary: str,
    epoch: int,
    *,
    stale: dict[str, int] | None = None,
    absent: tuple[str, ...] = (),
) -> dict[str, dict[str, str]]:
    """The full end state of every copy on every node of the lab, after a move, a rollback
    or a settle: one writable, mounted primary at `epoch`; every other copy a read-only,
    unmounted replica at an epoch no higher (or absent), none with a move marker or a
    promoted-by left over; the `stale` ones (node -> the least epoch they lost to)
    labelled stale (docs/move.md, "The fencing rule")."""
    stale = stale or {}
    states = {n: copy_state(lab, n, volume) for n in lab.state.nodes}
    for node, s in states.items():
        where = f"{node}: {s}"
        if node in absent:
            assert s == {}, where
            continue
        if node == primary:
            assert (s["zflock:role"], s["zflock:epoch"]) == ("primary", str(epoch)), where
            assert (s["readonly"], s["canmount"], s["mounted"]) == ("off", "on", "yes"), where
            assert (s["zflock:move"], s["zflock:stale"]) == ("-", "-"), where
            # Written by the move that promoted it (none for a copy never moved).
            assert s["zflock:promoted-by"] in ("-",) or s["zflock:promoted-by"].endswith(
                f"/{epoch}"
            ), where
            continue
        if not s:
            assert node not in stale, f"{node}: the stale copy is gone"
            continue
        assert s["zflock:role"] == "replica" and int(s["zflock:epoch"]) <= epoch, where
        assert (s["readonly"], s["canmount"], s["mounted"]) == ("on", "noauto", "no"), where
        assert (s["zflock:move"], s["zflock:promoted-by"]) == ("-", "-"), where
        if node in stale:
            lost_to, _, reason = s["zflock:stale"].partition("/")
            assert int(lost_to) >= stale[node] and reason, where
        else:
            assert s["zflock:stale"] == "-", where
    return states


def writable(state: dict[str, str]) -> bool:
    # A zflock copy a consumer could write to: ours (zflock:id set), readonly off, mounted.
    return (
        state.get("zflock:id", "-") != "-"
        and state.get("readonly") == "off"
        and state.get("mounted") == "yes"
    )


@dataclass
class Watch:
    """Polls every node while a test runs: two writable copies at once is a failure."""

    lab: AgentLab
    volume: str
    samples: int = 0
    violations: list[dict[str, dict[str, str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            states = {n: copy_state(self.lab, n, self.volume) for n in self.lab.state.nodes}
            if sum(writable(s) for s in states.values()) > 1:
                self.violations.append(states)
            self.samples += 1


@contextmanager
def one_writable_copy(lab: AgentLab, volume: str) -> Iterator[Watch]:
    """Invariant 1, checked during the test (not only at its end)."""
    watch = Watch(lab, volume)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch._stop.set()
        thread.join(timeout=30)
    assert watch.samples > 0
    assert watch.violations == [], f"two writable copies: {watch.violations[0]}"


def move(lab: AgentLab, volume: str, to: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.cli("move", volume, "--to", to, "--json", *extra)


def moved(lab: AgentLab, volume: str, to: str, *extra: str) -> dict[str, object]:
    r = move(lab, volume, to, *extra)
    assert r.returncode == 0, r.stderr
    report: dict[str, object] = json.loads(r.stdout)
    return report


@contextmanager
def throttled(veth: str, rate: str) -> Iterator[None]:
    """Traffic into a node limited to `rate` (a tbf qdisc on the host's end of its link)."""
    tc = ["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", rate, "burst", "64kb",
          "latency", "400ms"]  # fmt: skip
    subprocess.run(tc, check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=True)


def zfs_diagnosis(lab: AgentLab, node: str) -> str:
    """What a failed wait on a node's ZFS should show: its datasets and the machine's
    `zfs` processes (state and kernel wait channel)."""
    listing = lab.node_run(node, "zfs", "list", "-t", "all", "-o", "name,zflock:role,mounted,used")
    ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,etime,wchan:24,args"],
                        capture_output=True, text=True, timeout=10)  # fmt: skip
    zfs = [line for line in ps.stdout.splitlines() if "zfs" in line]
    return f"{node}'s datasets:\n{listing.stdout}{listing.stderr}zfs processes:\n" + "\n".join(zfs)


def start_move(lab: AgentLab, volume: str, to: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zflock", "move", volume, "--to", to, "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lab.env,
    )


# A consumer no hook stops, with a file open for writing: it reports each line it
# appends and fsyncs, so a test can write through the held descriptor when it chooses.
HOLDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b"held\\n"); os.fsync(fd)
print("ready", flush=True)
for line in sys.stdin:
    os.write(fd, line.encode()); os.fsync(fd)
    print("ok", flush=True)
"""


class Holder:
    """HOLDER on a lab node, holding `path` (started ready; stopped by its PID)."""

    def __init__(self, lab: AgentLab, node: str, path: str) -> None:
        self.proc = subprocess.Popen(
            [*zlab.node_prefix(lab.state, node), sys.executable, "-P", "-c", HOLDER, path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.answer() == "ready"

    def answer(self, seconds: float = 30) -> str:
        """The holder's next line ("" once it is gone), waited for at most `seconds`."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], patience(seconds))
        assert ready, "the holder did not answer"
        return self.proc.stdout.readline().strip()

    def write(self, line: str) -> str:
        """Append `line` through the held descriptor; its answer ("ok")."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # it is gone already
        try:
            self.proc.wait(timeout=patience(30))
        except subprocess.TimeoutExpired:
            self.proc.kill()  # by the PID it recorded
            self.proc.wait()


@contextmanager
def holding(lab: AgentLab, node: str, path: str) -> Iterator[Holder]:
    holder = Holder(lab, node, path)
    try:
        yield holder
    finally:
        holder.close()
