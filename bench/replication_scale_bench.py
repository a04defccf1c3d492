"""The continuous-replication scale benchmark (issue 11, third target): many volumes
kept replicated at once, with what it costs each node.

    sudo .venv/bin/python bench/replication_scale_bench.py [--volumes 300] [--every 30]
        [--duration 600] [--sample 15] [--data-kib 64] [--keep RULES] [--keep-replica RULES]
        [--arc-size 1G] [--out docs/benchmarks.md] [--keep-lab]

It brings up its own 3-node lab (zfs-fuse, a unique name; each daemon's ARC capped at
--arc-size, `none` for zfs-fuse's own default) and always takes it down:

1. creates --volumes volumes, spread over the nodes in turn, through the agents'
   `create_volume` RPC (scale_bench.create_volumes), and writes --data-kib of random
   data into each (one process per node);
2. gives each one replica, on the next node, with `--every` through the primaries'
   `set_policy` RPC (what `zflock replicate VOL --to NODE --every 30s` sends). Keep
   rules: the agent.toml defaults unless --keep / --keep-replica are given;
3. waits until every link has synced once (the warm-up: the full sends, all due in
   the first interval), reported apart;
4. for --duration seconds, every --sample seconds: each agent's RSS and CPU and each
   node's zfs-fuse CPU (utime + stime from /proc of the PIDs the lab recorded; an
   agent's CPU includes the `zfs` commands it ran and waited for), one
   `zfs list -t snapshot` per node (the snapshot count of every copy, checked against
   retention.most_kept for the policy: the most its rules let a copy hold at once),
   every replica's lag from `zflock ls --json` (every --lag-every seconds: an `ls`
   makes each agent list all its snapshots), and each scheduler's `schedules`
   answer: the lateness of every run it started (exact values, kept by the
   scheduler for this), runs started and failed, links failing.

Targets (issue 11): no copy holds more snapshots than its rules allow, agent RSS
under 100 MB, scheduling lateness p99 under 2 s; CPU per node reported. A miss is
reported, it does not fail the run. The section between this bench's markers in
--out is replaced (the first time it goes just above replication_bench.py's).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from benchkit import (
    BenchFailed,
    Lab,
    log,
    proc_cpu_seconds,
    proc_rss_mb,
    publish,
    quantile,
)
from move_bench import describe_machine, load_average
from scale_bench import create_volumes

REPO = Path(__file__).resolve().parent.parent
BEGIN = "<!-- replication_scale_bench.py: begin -->"
END = "<!-- replication_scale_bench.py: end -->"
BEFORE = "<!-- replication_bench.py: begin -->"
IN_FLIGHT = 8  # set_policy calls at once
TARGET_RSS_MB = 100.0
TARGET_LATE_P99_S = 2.0
# What a peer's protection may keep beyond the rules: the newest common snapshot with
# a replica that is behind (or, on a replica, the primary's base it still needs).
PROTECTED_EXTRA = 1

# Writes random data into each directory given (run inside a node, argv only).
FILL = (
    "import os, sys\n"
    "size = int(sys.argv[1])\n"
    "for d in sys.argv[2:]:\n"
    "    with open(os.path.join(d, 'data'), 'wb') as f:\n"
    "        f.write(os.urandom(size)); f.flush(); os.fsync(f.fileno())\n"
)


# -- pure: what one sample saw, and the report ------------------------------------------


@dataclass
class NodeSample:
    agent_cpu: float  # seconds since the agent started, its waited-for children included
    fuse_cpu: float
    rss_mb: float


@dataclass
class Sample:
    at: float  # seconds into the measured window
    nodes: dict[str, NodeSample]
    counts: dict[tuple[str, str], int]  # (node, volume) -> snapshots of that copy
    allowed_primary: int
    allowed_replica: int
    lags: list[float]
    load1: float


@dataclass
class Result:
    volumes: int
    every: float
    duration: float
    data_kib: int
    lag_every: float
    keep: str
    keep_replica: str
    arc_size: str | None = None
    placed: dict[str, str] = field(default_factory=dict)  # volume -> primary's node
    warmup_s: float = 0.0
    warmup_late: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    late_lost: int = 0
    runs: dict[str, int] = field(default_factory=dict)  # node -> runs started in the window
    failed: dict[str, int] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    failing_links_max: int = 0
    bench_cpu: float = 0.0
    # node -> {zfs subcommand: (commands, seconds)} in the window, from the agent's metrics
    zfs_commands: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)

    @property
    def span(self) -> float:
        return self.samples[-1].at - self.samples[0].at

    def cpu(self, node: str) -> tuple[float, float]:
        """(agent, zfs-fuse) CPU seconds used on `node` in the measured window."""
        first, last = self.samples[0].nodes[node], self.samples[-1].nodes[node]
        return last.agent_cpu - first.agent_cpu, last.fuse_cpu - first.fuse_cpu

    def rss_max(self, node: str) -> float:
        return max(s.nodes[node].rss_mb for s in self.samples)

    def worst_counts(self) -> tuple[tuple[int, int, str], tuple[int, int, str]]:
        """For primaries and replicas: (largest count, its allowance, where), the
        copy with the least room first (count - allowed largest)."""
        worst: dict[bool, tuple[int, int, int, str]] = {}
        for s in self.samples:
            for (node, volume), n in s.counts.items():
                primary = self.placed.get(volume) == node
                allowed = s.allowed_primary if primary else s.allowed_replica
                cand = (n - allowed, n, allowed, f"{volume} on {node} at {s.at:.0f} s")
                if primary not in worst or cand > worst[primary]:
                    worst[primary] = cand
        out = []
        for primary in (True, False):
            _, n, allowed, where = worst.get(primary, (0, 0, 0, "none"))
            out.append((n, allowed, where))
        return out[0], out[1]

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(what, goal, measured, met)."""
        (pn, pa, pw), (rn, ra, rw) = self.worst_counts()
        most = {True: 0, False: 0}
        for s in self.samples:
            for (node, volume), n in s.counts.items():
                primary = self.placed.get(volume) == node
                most[primary] = max(most[primary], n)
        rss = {n: self.rss_max(n) for n in sorted(self.samples[0].nodes)}
        late99 = quantile(self.late, 0.99) if self.late else float("nan")
        return [
            (
                "snapshots per primary copy",
                "<= what its rules allow",
                f"max {most[True]}; least room: {pn} of {pa} allowed ({pw})",
                pn <= pa,
            ),
            (
                "snapshots per replica copy",
                "<= what its rules allow",
                f"max {most[False]}; least room: {rn} of {ra} allowed ({rw})",
                rn <= ra,
            ),
            (
                "agent RSS (largest sample of each)",
                f"< {TARGET_RSS_MB:g} MB",
                ", ".join(f"{n} {v:.1f} MB" for n, v in rss.items()),
                max(rss.values()) < TARGET_RSS_MB,
            ),
            (
                "scheduling lateness p99",
                f"< {TARGET_LATE_P99_S:g} s",
                f"{late99:.2f} s ({len(self.late)} runs)",
                late99 < TARGET_LATE_P99_S,
            ),
        ]


def render(r: Result, argv: Sequence[str]) -> str:
    from zflock.replication.schedule import LATENESS_KEPT

    nodes = sorted(r.samples[0].nodes)
    per_node = r.volumes // len(nodes)
    late = r.late or [float("nan")]
    lags = [lag for s in r.samples for lag in s.lags] or [float("nan")]
    loads = [s.load1 for s in r.samples]
    lines = [
        BEGIN,
        "## Continuous replication at scale",
        "",
        f"`bench/replication_scale_bench.py {' '.join(argv)}` (issue 11, third target), "
        f"{r.machine.get('date', '?')}. A fresh 3-node lab (zfs-fuse, "
        f"{f'ARC capped at {r.arc_size}' if r.arc_size else 'its default ARC'}); "
        f"{r.volumes} volumes "
        f"(about {per_node} per node, each with {r.data_kib} KiB of data) created through "
        f"the agents' `create_volume` RPC; each given one replica on the next node with "
        f"`--every {r.every:g}s` through the primaries' `set_policy` RPC; keep rules "
        f"`{r.keep}` on the primary and `{r.keep_replica}` on the replica. The first runs "
        f"(full sends, all due in the first interval) took {r.warmup_s:.0f} s and are not "
        f"measured; then {r.span:.0f} s were, {len(r.samples)} samples about every "
        f"{r.span / max(1, len(r.samples) - 1):.0f} s.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for what, goal, measured, ok in r.targets():
        lines.append(f"| {what} | {goal} | {measured} | {'yes' if ok else 'NO'} |")
    lines += [
        "",
        "| node | runs started | failed | agent CPU | zfs-fuse CPU | together | "
        "% of one core | RSS max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in nodes:
        agent, fuse = r.cpu(n)
        lines.append(
            f"| {n} | {r.runs.get(n, 0)} | {r.failed.get(n, 0)} | {agent:.0f} s | {fuse:.0f} s "
            f"| {agent + fuse:.0f} s | {100 * (agent + fuse) / r.span:.0f}% "
            f"| {r.rss_max(n):.1f} MB |"
        )
    total_cpu = sum(sum(r.cpu(n)) for n in nodes)
    total_runs = max(1, sum(r.runs.values()))
    per_run = total_cpu / total_runs
    lines += [
        "",
        f"Together the nodes used {total_cpu:.0f} CPU seconds for {total_runs} runs: "
        f"{per_run:.2f} s per run (sender and receiver). Keeping {r.volumes} volumes "
        f"every {r.every:g} s needs {r.volumes / r.every:.1f} runs a second, so about "
        f"{r.volumes / r.every * per_run:.1f} cores at that cost; this machine has "
        f"{os.cpu_count()}, shared. Runs that cannot all fit in an interval start late.",
    ]
    lines += zfs_commands_table(r)
    errors = "; ".join(f"{e} ({n})" for e, n in r.errors.most_common(3)) or "none"
    lines += [
        "",
        f"- Lateness (how long after its due time a run started; exact values, each "
        f"scheduler keeps its latest {LATENESS_KEPT} for `schedules`"
        + (f", {r.late_lost} lost between two polls" if r.late_lost else ", none lost")
        + f"): p50 {quantile(late, 0.5):.2f} s, p90 {quantile(late, 0.9):.2f} s, "
        f"p99 {quantile(late, 0.99):.2f} s, max {max(late):.2f} s. During the warm-up: "
        + (
            f"p99 {quantile(r.warmup_late, 0.99):.1f} s, max {max(r.warmup_late):.1f} s."
            if r.warmup_late
            else "none recorded."
        ),
        f"- Replica lag (`zflock ls --json` about every {r.lag_every:g} s, every replica): p50 "
        f"{statistics.median(lags):.1f} s, p90 {quantile(lags, 0.9):.1f} s, max "
        f"{max(lags):.1f} s (the interval is {r.every:g} s).",
        f"- Failures: {sum(r.failed.values())} failed runs of {sum(r.runs.values())}; at "
        f"most {r.failing_links_max} links failing at once; their last errors (link-samples): "
        f"{errors}.",
        f"- Allowed snapshots: `retention.most_kept` over the time since the policies "
        f"were set, one snapshot every {r.every:g} s less the scheduler's 5% "
        f"jitter, counted just after a snapshot is taken (before its prune), plus "
        f"{PROTECTED_EXTRA} for a lagging peer's protected base.",
        f"- CPU: agent = the agent process and the `zfs` commands it ran; zfs-fuse = the "
        f"node's daemon (where ZFS does its work); % of one core over the {r.span:.0f} s. "
        f"The benchmark process itself (lab set-up, `ls`, listings, polls) used "
        f"{r.bench_cpu:.0f} s in all.",
        f"- Load average (1 min) during the window: {min(loads):.1f}-{max(loads):.1f} on "
        f"{os.cpu_count()} cores shared with other work: wall times (lateness, lag) follow "
        "the queue for a core.",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in r.machine.items()),
        END,
    ]
    return "\n".join(lines) + "\n"


def zfs_command_totals(exposition: str) -> dict[str, tuple[float, float]]:
    """{subcommand: (count, seconds)} of `zflock_zfs_command_duration_seconds` in an
    agent's metrics text (the `zfs`/`zpool` commands it ran, streams excluded)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "zflock_zfs_command_duration_seconds":
            continue
        for sample in family.samples:
            sub = f"{sample.labels.get('command', '?')} {sample.labels.get('subcommand', '?')}"
            entry = totals.setdefault(sub, [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] += sample.value
            elif sample.name.endswith("_sum"):
                entry[1] += sample.value
    return {k: (v[0], v[1]) for k, v in totals.items()}


def zfs_commands_table(r: Result) -> list[str]:
    """Per node: `zfs` commands per run started, by subcommand, and their seconds."""
    runs = {n: max(1, c) for n, c in r.runs.items()}
    subs = sorted({sub for per in r.zfs_commands.values() for sub, (n, _) in per.items() if n})
    if not subs:
        return []
    nodes = sorted(r.zfs_commands)
    lines = [
        "",
        "`zfs` commands the agents ran in the window, per run started (from each "
        "agent's `zflock_zfs_command_duration_seconds`; a run's commands on both its "
        "sides, the replica's counted on the replica's node), and their wall seconds "
        "in all:",
        "",
        "| command | " + " | ".join(nodes) + " |",
        "|---|" + "---:|" * len(nodes),
    ]
    for sub in subs:
        cells = []
        for n in nodes:
            count, seconds = r.zfs_commands[n].get(sub, (0.0, 0.0))
            cells.append(f"{count / runs.get(n, 1):.1f} ({seconds:.0f} s)")
        lines.append(f"| `{sub}` | " + " | ".join(cells) + " |")
    return lines


# -- the lab ---------------------------------------------------------------------------


class ScaleRun:
    def __init__(self, lab: Lab, result: Result) -> None:
        from zflock.cli.common import load_cluster
        from zflock.lab.agents import AGENT_ROLE

        self.lab = lab
        self.r = result
        self.cluster_file = Path(lab.env["ZFLOCK_CLUSTER"])
        self.cluster = load_cluster(self.cluster_file, None, timeout=120)
        self.nodes = sorted(lab.state.nodes)
        self.pids = {
            n: (node.processes[AGENT_ROLE].pid, node.processes[node.namespace_role].pid)
            for n, node in lab.state.nodes.items()
        }
        self.seen: dict[str, int] = {}  # node -> lateness values read so far
        self.started: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    # -- setting up

    def create(self) -> None:
        log(f"creating {self.r.volumes} volumes through the agents' RPC")
        self.r.placed = create_volumes(self.cluster_file, range(self.r.volumes))
        mount_root = self.lab.state.mount_root
        for node in self.nodes:
            dirs = [f"{mount_root}/{v}" for v, n in self.r.placed.items() if n == node]
            self.lab.exec(node, sys.executable, "-P", "-c", FILL, str(self.r.data_kib << 10), *dirs)

    def target_of(self, volume: str) -> str:
        node = self.r.placed[volume]
        return self.nodes[(self.nodes.index(node) + 1) % len(self.nodes)]

    def set_policies(self, keep: str | None, keep_replica: str | None) -> None:
        from zflock.rpc import messages as m

        async def go() -> None:
            gate = asyncio.Semaphore(IN_FLIGHT)
            clients = {n: self.cluster.client(n) for n in self.nodes}
            for c in clients.values():
                await c.connect()

            async def one(volume: str) -> None:
                request = m.SetPolicy(
                    name=volume, to=[self.target_of(volume)], every=f"{self.r.every:g}s",
                    keep=keep, keep_replica=keep_replica,
                )  # fmt: skip
                async with gate:
                    info = await clients[self.r.placed[volume]].call("set_policy", request)
                self.r.keep, self.r.keep_replica = info.keep, info.keep_replica

            try:
                await asyncio.gather(*(one(v) for v in self.r.placed))
            finally:
                for c in clients.values():
                    await c.close()

        asyncio.run(go())

    # -- polling

    def schedules(self) -> dict[str, Any]:
        from zflock.rpc import messages as m

        answers = asyncio.run(self.cluster.call_all("schedules", m.Empty(), deadline=120))
        out = {}
        for a in answers:
            if not a.ok:
                raise BenchFailed(f"schedules on {a.node}: {a.error}")
            out[a.node] = a.value
        return out

    def take_lateness(self, answers: dict[str, Any]) -> tuple[list[float], int]:
        from zflock.replication.schedule import lateness_since

        values: list[float] = []
        lost = 0
        for node, answer in answers.items():
            new, gone = lateness_since(self.seen.get(node, 0), answer.runs_started, answer.lateness)
            self.seen[node] = answer.runs_started
            values += new
            lost += gone
        return values, lost

    def warm_up(self, timeout: float) -> None:
        """Until every link has synced once (bounded); the lateness seen meanwhile."""
        started = time.monotonic()
        while True:
            answers = self.schedules()
            late, _ = self.take_lateness(answers)
            self.r.warmup_late += late
            links = [link for a in answers.values() for link in a.links]
            synced = sum(1 for link in links if link.last_success is not None)
            if len(links) == self.r.volumes and synced == len(links):
                break
            if time.monotonic() - started > timeout:
                raise BenchFailed(f"warm-up: {synced} of {self.r.volumes} links synced in time")
            log(f"warm-up: {len(links)} links, {synced} synced once")
            time.sleep(5)
        self.r.warmup_s = time.monotonic() - started
        for node, a in answers.items():
            self.started[node], self.failed[node] = a.runs_started, a.runs_failed

    def metrics(self) -> dict[str, dict[str, tuple[float, float]]]:
        import urllib.request

        from zflock.cluster.config import DEFAULT_METRICS_PORT

        out = {}
        for node in self.nodes:
            url = f"http://{self.lab.state.nodes[node].address}:{DEFAULT_METRICS_PORT}/metrics"
            with urllib.request.urlopen(url, timeout=60) as answer:
                out[node] = zfs_command_totals(answer.read().decode())
        return out

    def snapshot_counts(self) -> dict[tuple[str, str], int]:
        from zflock.lab.nodes import node_prefix

        counts: dict[tuple[str, str], int] = {}
        for node in self.nodes:
            root = self.lab.state.nodes[node].pool_root
            argv = [*node_prefix(self.lab.state, node), "zfs", "list", "-H", "-o", "name",
                    "-t", "snapshot", "-r", root]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
            if done.returncode != 0:
                raise BenchFailed(f"zfs list on {node}: {done.stderr.strip()[-200:]}")
            for line in done.stdout.splitlines():
                dataset = line.split("@", 1)[0]
                if dataset.startswith(root + "/"):
                    key = (node, dataset[len(root) + 1 :])
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def lags(self) -> list[float]:
        out = self.lab.zflock("ls", "--json")
        lags = []
        for vol in json.loads(out)["volumes"]:
            for copy in vol["copies"]:
                rep = copy.get("replication")
                if rep and rep.get("lag_s") is not None:
                    lags.append(float(rep["lag_s"]))
        return lags

    def sample(self, at: float, allowed: tuple[int, int], with_lag: bool) -> Sample:
        nodes = {
            n: NodeSample(
                agent_cpu=proc_cpu_seconds(agent, children=True),
                fuse_cpu=proc_cpu_seconds(fuse),
                rss_mb=proc_rss_mb(agent),
            )
            for n, (agent, fuse) in self.pids.items()
        }
        answers = self.schedules()
        late, lost = self.take_lateness(answers)
        self.r.late += late
        self.r.late_lost += lost
        failing = 0
        for node, a in answers.items():
            self.r.runs[node] = a.runs_started - self.started[node]
            self.r.failed[node] = a.runs_failed - self.failed[node]
            for link in a.links:
                if link.failures:
                    failing += 1
                    self.r.errors[link.last_error or "?"] += 1
        self.r.failing_links_max = max(self.r.failing_links_max, failing)
        return Sample(
            at=at, nodes=nodes, counts=self.snapshot_counts(), allowed_primary=allowed[0],
            allowed_replica=allowed[1], lags=self.lags() if with_lag else [],
            load1=os.getloadavg()[0],
        )  # fmt: skip


def allowance(r: Result, since_policy: float) -> tuple[int, int]:
    """The most snapshots a primary and a replica copy may hold `since_policy` seconds
    after the policies were set (see the report's note)."""
    from zflock.replication.retention import most_kept, parse_keep
    from zflock.replication.schedule import Timing

    spacing = r.every * (1 - Timing().jitter / 2)
    return (
        most_kept(parse_keep(r.keep), spacing, since_policy) + PROTECTED_EXTRA,
        most_kept(parse_keep(r.keep_replica), spacing, since_policy) + PROTECTED_EXTRA,
    )


def bench(lab: Lab, r: Result, args: argparse.Namespace) -> None:
    run = ScaleRun(lab, r)
    run.create()
    log(f"setting {r.volumes} policies (--every {r.every:g}s)")
    policy_set = time.monotonic()
    run.set_policies(args.keep, args.keep_replica)
    run.warm_up(args.warmup_timeout)
    log(f"warm-up done in {r.warmup_s:.0f} s; measuring for {r.duration:g} s")
    before = run.metrics()
    start = time.monotonic()
    tick = start
    last_lag = -float("inf")
    while True:
        now = time.monotonic()
        # `ls` makes every agent list all its copies and snapshots: a few a minute
        # give hundreds of lag values without loading the nodes every sample.
        with_lag = now - last_lag >= args.lag_every or now - start >= r.duration
        last_lag = now if with_lag else last_lag
        r.samples.append(run.sample(now - start, allowance(r, now - policy_set), with_lag))
        s = r.samples[-1]
        late = f"p99 {quantile(r.late, 0.99):.2f} s" if r.late else "none yet"
        log(f"{s.at:.0f} s: lateness {late}, {sum(r.runs.values())} runs, "
            f"{sum(r.failed.values())} failed, load {s.load1:.1f}")  # fmt: skip
        if now - start >= r.duration:
            break
        tick = max(tick + args.sample, time.monotonic())
        time.sleep(max(0.0, min(tick, start + r.duration) - time.monotonic()))
    after = run.metrics()
    r.zfs_commands = {
        node: {
            sub: (count - before[node].get(sub, (0.0, 0.0))[0],
                  seconds - before[node].get(sub, (0.0, 0.0))[1])
            for sub, (count, seconds) in after[node].items()
        }
        for node in after
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--volumes", type=int, default=300)
    p.add_argument("--every", type=float, default=30.0, help="interval, seconds")
    p.add_argument("--duration", type=float, default=600.0, help="measured, seconds")
    p.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    p.add_argument("--lag-every", type=float, default=60.0, help="seconds between `ls` reads")
    p.add_argument("--data-kib", type=int, default=64, help="data written to each volume")
    p.add_argument("--keep", default=None, help="primary's keep rules (agent.toml default)")
    p.add_argument("--keep-replica", default=None, help="replica's (agent.toml default)")
    p.add_argument("--warmup-timeout", type=float, default=1200.0)
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    p.add_argument(
        "--arc-size",
        default="1G",
        help="each zfs-fuse's ARC cap (`zflock lab up --arc-size`); 'none': zfs-fuse's own",
    )
    p.add_argument("--keep-lab", action="store_true")
    args = p.parse_args(argv)
    if args.volumes < 3 or args.every < 1 or args.duration < 0 or args.sample < 1:
        p.error("need --volumes >= 3, --every >= 1, --duration >= 0, --sample >= 1")
    if os.geteuid() != 0:
        print("replication_scale_bench: needs root (the lab)", file=sys.stderr)
        return 2
    r = Result(volumes=args.volumes, every=args.every, duration=args.duration,
               data_kib=args.data_kib, lag_every=args.lag_every, keep="",
               keep_replica="")  # fmt: skip
    arc = None if args.arc_size.lower() == "none" else args.arc_size
    r.arc_size = arc
    lab = Lab(f"rs{secrets.token_hex(3)}", nodes=3, arc_size=arc)
    load_at_start = load_average()
    try:
        log(f"lab {lab.name}: 3 nodes")
        lab.up()
        bench(lab, r, args)
    except (BenchFailed, subprocess.TimeoutExpired) as exc:
        print(f"replication_scale_bench: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.finish(args.keep_lab)
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    r.bench_cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    r.machine = describe_machine(load_at_start)
    r.machine["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    publish(args.out, render(r, sys.argv[1:] if argv is None else argv), BEGIN, END, BEFORE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
