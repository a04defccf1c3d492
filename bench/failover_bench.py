"""The failover benchmark: from "primary unreachable" to "replica writable", and the loss
window, under a steady writer with continuous replication.

    sudo .venv/bin/python bench/failover_bench.py [--every 10] [--warmup 35] [--runs 2]
                                                  [--self-fence-after 30]
                                                  [--out docs/benchmarks.md] [--keep-lab]

It brings up its own 3-node lab (a unique name; every agent with
`[failover] self_fence_after` as given, 30 s being the default) and always
takes it down. Each run:

1. creates a volume on node1 and starts the steady writer (zflock.lab.writer:
   fsynced records, a few hundred per second);
2. `zflock replicate VOL --to node2,node3 --every Ns`: node1's scheduler keeps
   both replicas; waits --warmup seconds;
3. **node1 dies** at t0: its link goes down, its agent and the writer are
   SIGKILLed, and its copy is made read-only and unmounted by hand (the lab's
   pool outlives the node's processes; a powered-off host serves nothing);
4. runs `zflock failover VOL --json` until it is allowed (a refusal says how
   long is left; the bench sleeps that long, or 2 s while a node heard from
   node1 moments ago, then asks again); the failover
   returns `promoted_at`, when the replica became writable;
5. records promoted_at - t0 (the time to writable: self_fence_after + the
   lease's margin + asking and promoting), the loss window the command
   printed (the age of the promoted snapshot), and the acknowledged writes
   missing on the new primary; then brings node1 back for the next run.

The section between this bench's markers in --out is replaced; the rest of the
file is kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
import benchkit
from benchkit import BenchFailed, log, merge_report, writer_argv, zflock_argv

REPO = Path(__file__).resolve().parent.parent
BEGIN = "<!-- failover_bench.py: begin -->"
END = "<!-- failover_bench.py: end -->"
LEFT = re.compile(r"(\d+) s left")


# -- pure: the report ------------------------------------------------------------------


@dataclass
class Run:
    to_writable: float  # seconds from t0 to promoted_at
    loss_window: float  # the command's loss_window_s
    acked: int  # writes acknowledged in all
    lost: int  # acknowledged writes missing on the new primary
    refusals: int  # failovers refused (too soon) before the one allowed

    @property
    def before_death(self) -> float:
        """The promoted snapshot's age when the node died: the writes really lost."""
        return self.loss_window - self.to_writable


@dataclass
class Result:
    every: float
    warmup: float
    self_fence_after: float
    runs: list[Run] = field(default_factory=list)
    machine: str = ""


def render(r: Result, argv: list[str]) -> str:
    lines = [
        BEGIN,
        "## Failover: time to a writable replica, and the loss window",
        "",
        f"`bench/failover_bench.py {' '.join(argv)}` on {r.machine}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. A 3-node lab (zfs-fuse), every "
        f"agent with `self_fence_after = {r.self_fence_after:g}`; a volume on node1 under "
        f"the lab's steady writer, `zflock replicate --to node2,node3 --every {r.every:g}s`, "
        f"{r.warmup:g} s of warm-up; then node1 dies (link down, agent and writer "
        "SIGKILLed) and `zflock failover` is asked until it is allowed. *To writable*: "
        "from the link going down to the promoted copy being writable (the failover's "
        "`promoted_at`); it is `self_fence_after` plus the lease's margin "
        "(docs/failover.md) plus asking and promoting. *Loss window*: the age of the "
        "promoted snapshot when the copy became writable, as the command printed it: a "
        "bound on what was lost, which includes the wait; *of it, before the death*: "
        "the snapshot's age when node1 died, the writes really lost (a dead node writes "
        "nothing more).",
        "",
        "| run | to writable | loss window printed | of it, before the death "
        "| acknowledged writes lost | refused first |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for i, run_ in enumerate(r.runs, start=1):
        lines.append(
            f"| {i} | {run_.to_writable:.1f} s | {run_.loss_window:.1f} s | "
            f"{run_.before_death:.1f} s | {run_.lost} of {run_.acked} | {run_.refusals} |"
        )
    if r.runs:
        writable = [x.to_writable for x in r.runs]
        lost = [x.before_death for x in r.runs]
        lines += [
            "",
            f"Median: {statistics.median(writable):.1f} s to writable; "
            f"{statistics.median(lost):.1f} s of writes lost (at most one interval plus a "
            f"sync, with replication every {r.every:g} s).",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def seconds_left(stderr: str) -> float | None:
    """The wait a too-soon refusal names; None for any other refusal."""
    found = LEFT.search(stderr)
    return float(found.group(1)) if found else None


# -- the lab ---------------------------------------------------------------------------


class Lab(benchkit.Lab):
    def __init__(self, name: str) -> None:
        super().__init__(name, nodes=3)

    def up_with(self, self_fence_after: float) -> None:
        """Up, then every agent restarted with a short [failover] self_fence_after."""
        self.up()
        from zflock.lab import agents

        for node in self.state.nodes.values():
            config = agents.agent_dir(node) / "agent.toml"
            config.write_text(
                config.read_text() + f"\n[failover]\nself_fence_after = {self_fence_after:g}\n"
            )
            agents.stop(node)
            agents.start(self.state, node)

    def link(self, node: str, up: bool) -> None:
        veth = self.state.nodes[node].host_veth
        subprocess.run(["ip", "link", "set", veth, "up" if up else "down"], check=True)

    def kill_agent(self, node: str) -> None:
        os.kill(self.state.nodes[node].processes["agent"].pid, signal.SIGKILL)

    def start_agent(self, node: str) -> None:
        from zflock.lab import agents

        agents.start(self.state, self.state.nodes[node])


def one_run(lab: Lab, number: int, every: float, warmup: float) -> Run:
    volume = f"fb{number}"
    records = f"{lab.state.mount_root}/{volume}/records"
    acks, pidfile = lab.dir / f"acks{number}", lab.dir / f"writer{number}.pid"
    lab.zflock("create", volume, "--on", "node1")
    lab.exec("node1", *writer_argv("start", "--file", records, "--acks", str(acks),
                                   "--pidfile", str(pidfile), "--create"))  # fmt: skip
    lab.zflock("replicate", volume, "--to", "node2,node3", "--every", f"{every:g}s")
    log(f"run {number}: writing and replicating every {every:g} s for {warmup:g} s")
    time.sleep(warmup)
    t0 = time.time()
    lab.link("node1", up=False)
    try:
        lab.kill_agent("node1")
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        dataset = f"{lab.state.nodes['node1'].pool_root}/{volume}"
        lab.exec("node1", "sh", "-c", f"zfs set readonly=on {dataset} && zfs unmount {dataset}")
        refusals = 0
        deadline = time.monotonic() + 600
        while True:
            argv = [*zflock_argv(), "failover", volume, "--json", "--timeout", "3"]
            r = subprocess.run(argv, capture_output=True, text=True, env=lab.env, timeout=300)
            if r.returncode == 0:
                report = json.loads(r.stdout)
                break
            left = seconds_left(r.stderr)
            if left is None or time.monotonic() > deadline:
                raise BenchFailed(f"failover refused: {r.stderr.strip()}")
            refusals += 1
            # "moments ago": a node heard from it within a ping round; its wait is
            # counted from now, an overestimate. Ask again soon; otherwise the wait
            # named is exact, less a little for the next ask's own time.
            time.sleep(2.0 if "moments ago" in r.stderr else max(0.5, left - 0.5))
    finally:
        lab.link("node1", up=True)
    to_writable = report["promoted_at"] - t0
    log(f"run {number}: writable on {report['node']} after {to_writable:.1f} s, "
        f"loss window {report['loss_window_s']} s")  # fmt: skip
    on_new = lab.exec(report["node"], "cat", records)
    present = len(on_new.splitlines())
    acked = [int(x) for x in acks.read_text().split()]
    lost = sum(1 for n in acked if n > present)
    lab.start_agent("node1")
    return Run(to_writable, float(report["loss_window_s"]), len(acked), lost, refusals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=10.0, help="replication interval, s")
    parser.add_argument("--warmup", type=float, default=35.0, help="replicated writing, s")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--self-fence-after", type=float, default=30.0)
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args(argv)
    result = Result(args.every, args.warmup, args.self_fence_after)
    lab = Lab(f"fb{secrets.token_hex(3)}")
    try:
        lab.up_with(args.self_fence_after)
        for number in range(1, args.runs + 1):
            result.runs.append(one_run(lab, number, args.every, args.warmup))
    except (BenchFailed, subprocess.TimeoutExpired) as exc:
        print(f"failover_bench: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.finish(args.keep_lab)
    load = os.getloadavg()[0]
    result.machine = f"{platform.node()} ({os.cpu_count()} cores, load average {load:.1f})"
    section = render(result, sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.write_text(merge_report(out.read_text() if out.exists() else "", section, BEGIN, END))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
