"""What one scheduled replication run costs in CPU, against the same ZFS work done by
hand on the same nodes in the same run (issue 11: the lever for the scale target).

    sudo .venv/bin/python bench/replication_cost_bench.py [--volumes 30] [--every 10]
        [--window 60] [--out docs/benchmarks.md] [--keep-lab]

It brings up its own 2-node lab (zfs-fuse, a unique name) and always takes it down:

1. the floor: --volumes plain datasets on node1 (not zflock volumes: no agent looks
   at them), each with 64 KiB of data, sent in full to node2 once (not measured); then
   rounds of, for each dataset, `zfs snapshot` and `zfs send -i | zfs receive` through
   a local pipe between the two nodes' namespaces (no transport, no bookkeeping: the
   ZFS work alone), until the datasets hold about as many snapshots as zflock's
   volumes will at the end of step 2 (a `zfs get -r` walks every snapshot, so the
   count matters; both counts are reported). No agent replicates anything meanwhile;
2. zflock: --volumes volumes through the agents' `create_volume` RPC, on the two
   nodes in turn, 64 KiB in each, each replicated to the other node `--every` seconds
   (the primaries' `set_policy` RPC, the agent.toml keep rules); after every link has
   synced once, --window seconds are measured.

For each, CPU seconds per run: the commands (floor: the `zfs` and `nsenter`
processes this bench ran and waited for; zflock: each agent and the `zfs` commands it
ran, so its SSH transport and bookkeeping too) and the two zfs-fuse daemons, from
/proc of the PIDs the lab recorded. zflock's runs are the schedulers' runs started in
the window; its `zfs` commands per run come from the agents' metrics. The ratio is
zflock's CPU per run over the floor's. The section between this bench's markers in
--out is replaced (the first time it goes just above replication_scale_bench.py's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from benchkit import BenchFailed, Lab, log, proc_cpu_seconds, publish
from move_bench import describe_machine, load_average
from replication_scale_bench import FILL, zfs_command_totals
from scale_bench import create_volumes

REPO = Path(__file__).resolve().parent.parent
BEGIN = "<!-- replication_cost_bench.py: begin -->"
END = "<!-- replication_cost_bench.py: end -->"
BEFORE = "<!-- replication_scale_bench.py: begin -->"
FLOOR_ROOT = "tank/floor"


@dataclass
class Cost:
    """CPU seconds spent on `runs` runs, and the snapshots each copy held at the end."""

    runs: int = 0
    commands: float = 0.0  # floor: its processes; zflock: the agents (with their zfs)
    daemons: float = 0.0  # the two zfs-fuse daemons
    seconds: float = 0.0  # wall
    snapshots: int = 0
    zfs_per_run: dict[str, float] = field(default_factory=dict)

    def per_run(self, cpu: float) -> float:
        return cpu / self.runs if self.runs else float("nan")

    @property
    def total(self) -> float:
        return self.commands + self.daemons


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CostRun:
    def __init__(self, lab: Lab, volumes: int, every: float, window: float) -> None:
        self.lab, self.volumes, self.every, self.window = lab, volumes, every, window
        nodes = lab.state.nodes
        self.nodes = sorted(nodes)
        self.daemons = [nodes[n].processes[nodes[n].namespace_role].pid for n in self.nodes]
        self.agents = [nodes[n].processes["agent"].pid for n in self.nodes]
        self.prefix = {
            n: ["nsenter", f"--mount=/proc/{nodes[n].processes[nodes[n].namespace_role].pid}"
                "/ns/mnt", "--"]
            for n in self.nodes
        }  # fmt: skip

    def daemons_cpu(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.daemons)

    def zfs(self, node: str, *argv: str) -> None:
        subprocess.run([*self.prefix[node], "zfs", *argv], check=True, capture_output=True)

    def pipe(self, send: Sequence[str], receive: Sequence[str]) -> None:
        """`zfs send ... | zfs receive ...`, node1 to node2, through a local pipe."""
        sender = subprocess.Popen([*self.prefix["node1"], "zfs", *send], stdout=subprocess.PIPE)
        done = subprocess.run(
            [*self.prefix["node2"], "zfs", *receive], stdin=sender.stdout, capture_output=True
        )
        assert sender.stdout is not None
        sender.stdout.close()
        if sender.wait(timeout=120) != 0 or done.returncode != 0:
            raise BenchFailed(f"floor: {' '.join(send)} | receive: {done.stderr.decode()}")

    # -- the floor

    def floor_setup(self) -> list[str]:
        log(f"floor: {self.volumes} plain datasets on node1, sent in full to node2")
        for node in self.nodes:
            self.zfs(node, "create", "-o", "mountpoint=none", FLOOR_ROOT)
        names = [f"{FLOOR_ROOT}/f{i:04d}" for i in range(self.volumes)]
        for i, ds in enumerate(names):
            self.zfs("node1", "create", "-o", f"mountpoint=/floor/f{i:04d}", ds)
        self.lab.exec("node1", sys.executable, "-P", "-c", FILL, str(64 << 10),
                      *(f"/floor/f{i:04d}" for i in range(self.volumes)))  # fmt: skip
        for ds in names:
            self.zfs("node1", "snapshot", f"{ds}@r0")
            self.pipe(["send", f"{ds}@r0"], ["receive", ds])
        return names

    def floor(self, names: list[str], snapshots: int) -> Cost:
        log(f"floor: rounds until each dataset holds {snapshots} snapshots")
        cost = Cost()
        d0, c0, t0 = self.daemons_cpu(), children_cpu(), time.monotonic()
        for r in range(1, max(snapshots, 2)):
            for ds in names:
                self.zfs("node1", "snapshot", f"{ds}@r{r}")
                self.pipe(["send", "-i", f"{ds}@r{r - 1}", f"{ds}@r{r}"], ["receive", ds])
                cost.runs += 1
        cost.daemons = self.daemons_cpu() - d0
        cost.commands = children_cpu() - c0
        cost.seconds = time.monotonic() - t0
        cost.snapshots = max(snapshots, 2)
        cost.zfs_per_run = {"snapshot": 1.0, "send": 1.0, "receive": 1.0}
        return cost

    # -- zflock

    def zflock(self) -> Cost:
        from zflock.cli.common import load_cluster
        from zflock.rpc import messages as m

        cluster_file = Path(self.lab.env["ZFLOCK_CLUSTER"])
        log(f"zflock: {self.volumes} volumes, each replicated to the other node")
        placed = create_volumes(cluster_file, range(self.volumes))
        mount_root = self.lab.state.mount_root
        for node in self.nodes:
            dirs = [f"{mount_root}/{v}" for v, n in placed.items() if n == node]
            self.lab.exec(node, sys.executable, "-P", "-c", FILL, str(64 << 10), *dirs)
        cluster = load_cluster(cluster_file, None, timeout=120)

        async def set_policies() -> None:
            for volume, node in placed.items():
                other = next(n for n in self.nodes if n != node)
                request = m.SetPolicy(name=volume, to=[other], every=f"{self.every:g}s")
                async with cluster.client(node) as client:
                    await client.call("set_policy", request)

        asyncio.run(set_policies())

        def schedules() -> tuple[int, int, int]:
            answers = asyncio.run(cluster.call_all("schedules", m.Empty(), deadline=120))
            if not all(a.ok for a in answers):
                raise BenchFailed(f"schedules: {[a.error for a in answers if not a.ok]}")
            links = [link for a in answers for link in a.value.links]
            synced = sum(1 for link in links if link.last_success is not None)
            return len(links), synced, sum(a.value.runs_started for a in answers)

        deadline = time.monotonic() + 600
        while (state := schedules())[1] < self.volumes:
            if time.monotonic() > deadline:
                raise BenchFailed(f"warm-up: {state[1]} of {self.volumes} links synced")
            time.sleep(2)
        log(f"zflock: every link synced once; measuring {self.window:g} s")
        cost = Cost()
        zfs0 = self.zfs_commands()
        a0 = sum(proc_cpu_seconds(p, children=True) for p in self.agents)
        d0, t0, runs0 = self.daemons_cpu(), time.monotonic(), state[2]
        time.sleep(self.window)
        cost.commands = sum(proc_cpu_seconds(p, children=True) for p in self.agents) - a0
        cost.daemons = self.daemons_cpu() - d0
        cost.seconds = time.monotonic() - t0
        cost.runs = schedules()[2] - runs0
        zfs1 = self.zfs_commands()
        cost.zfs_per_run = {
            k.split()[1]: (zfs1[k] - zfs0.get(k, 0.0)) / max(cost.runs, 1)
            for k in zfs1
            if zfs1[k] - zfs0.get(k, 0.0) > 0
        }
        volume, node = next(iter(placed.items()))
        listing = self.lab.exec(node, "zfs", "list", "-H", "-t", "snapshot", "-o", "name",
                                "-r", f"{self.lab.state.pool_root}/{volume}")  # fmt: skip
        cost.snapshots = len(listing.split())
        return cost

    def zfs_commands(self) -> dict[str, float]:
        import urllib.request

        from zflock.cluster.config import DEFAULT_METRICS_PORT

        total: dict[str, float] = {}
        for node in self.nodes:
            url = f"http://{self.lab.state.nodes[node].address}:{DEFAULT_METRICS_PORT}/metrics"
            with urllib.request.urlopen(url, timeout=60) as answer:
                for k, (count, _) in zfs_command_totals(answer.read().decode()).items():
                    total[k] = total.get(k, 0.0) + count
        return total


def render(floor: Cost, zflock: Cost, args: argparse.Namespace, machine: dict[str, str]) -> str:
    def row(name: str, c: Cost) -> str:
        per = c.per_run(c.total)
        return (
            f"| {name} | {c.runs} | {c.runs / c.seconds:.1f} | {c.snapshots} | "
            f"{c.per_run(c.commands):.3f} s | {c.per_run(c.daemons):.3f} s | {per:.3f} s | "
            f"{per / floor.per_run(floor.total):.2f} |"
        )

    zfs = ", ".join(f"{k} {v:.1f}" for k, v in sorted(zflock.zfs_per_run.items()))
    cores = 10 * zflock.per_run(zflock.total)
    lines = [
        BEGIN,
        "## What a replication run costs, against the floor",
        "",
        f"`bench/replication_cost_bench.py {' '.join(args.argv)}` ({machine['date']}): a "
        f"fresh 2-node lab (zfs-fuse); {args.volumes} volumes replicated to the other node "
        f"`--every {args.every:g}s`, {args.window:g} s measured after every link synced "
        f"once; the floor is the same ZFS work done by hand on {args.volumes} plain "
        "datasets of the same nodes (snapshot, then `zfs send -i | zfs receive` through a "
        "local pipe: no transport, no bookkeeping). CPU per run on both sides: commands "
        "(floor: the `zfs`/`nsenter` processes; zflock: the agents and the `zfs` commands "
        "they ran, so SSH and bookkeeping too) and the two zfs-fuse daemons.",
        "",
        "| | runs | runs/s | snapshots per copy at the end | commands | zfs-fuse | "
        "together | / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("floor (by hand)", floor),
        row("zflock", zflock),
        "",
        f"- zflock's `zfs` commands per run (both sides, from the agents' metrics; streams "
        f"not counted): {zfs}.",
        f"- At zflock's cost, the 300-volume target (10 runs a second) needs {cores:.1f} "
        f"cores; at the floor's, {10 * floor.per_run(floor.total):.1f}.",
        "",
        f"Machine: {'; '.join(f'{k}: {v}' for k, v in machine.items())}",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--volumes", type=int, default=30)
    p.add_argument("--every", type=float, default=10.0, help="interval, seconds")
    p.add_argument("--window", type=float, default=60.0, help="measured, seconds")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    p.add_argument("--keep-lab", action="store_true")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.volumes < 2 or args.every < 1 or args.window < 10:
        p.error("need --volumes >= 2, --every >= 1, --window >= 10")
    if os.geteuid() != 0:
        print("replication_cost_bench: needs root (the lab)", file=sys.stderr)
        return 2
    lab = Lab(f"rc{secrets.token_hex(3)}", nodes=2)
    load_at_start = load_average()
    try:
        log(f"lab {lab.name}: 2 nodes")
        lab.up()
        run = CostRun(lab, args.volumes, args.every, args.window)
        # The floor first, while no agent replicates anything (its daemons' CPU is its
        # own), up to about as many snapshots as zflock's copies hold at the end.
        names = run.floor_setup()
        floor = run.floor(names, 2 + int(args.window / args.every))
        zflock = run.zflock()
    except (BenchFailed, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"replication_cost_bench: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.finish(args.keep_lab)
    machine = describe_machine(load_at_start)
    machine["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    publish(args.out, render(floor, zflock, args, machine), BEGIN, END, BEFORE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
