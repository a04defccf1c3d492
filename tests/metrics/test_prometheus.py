"""A real Prometheus (Debian's package) scrapes every agent of a lab.

What the CLI reports (`zflock replicate --json`, `zflock ls --json`,
`zflock move --json`) must be what Prometheus stores: the replica's newest
snapshot time and lag, the bytes sent, the move's downtime and total time.
A scrape passes `promtool check metrics`, and the shipped alert rules,
loaded into this Prometheus, see a fenced primary.

Prometheus runs in the host's namespace, listens on loopback only, keeps its
data in the test's temporary directory, and is stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from zflock.cluster.config import DEFAULT_METRICS_PORT

pytestmark = pytest.mark.lab

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts" / "zflock.rules.yml"


@pytest.fixture(scope="module")
def agent_lab() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=2) as lab:
        yield lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=patience(10)) as response:
        body: bytes = response.read()
        return body.decode()


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: the result vector ([] when nothing matches)."""
        answer = json.loads(
            http_get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        )
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float, tolerance: float = 1e-6) -> float:
        """Wait until the query returns `expected` (new scrapes come every second)."""
        seen: list[float | None] = []

        def matches() -> bool:
            seen.append(self.value(promql))
            return seen[-1] is not None and abs(seen[-1] - expected) <= tolerance

        try:
            wait_until(f"{promql} == {expected}", matches, timeout=30, interval=0.5)
        except AssertionError:
            raise AssertionError(f"{promql}: expected {expected}, last seen {seen[-3:]}") from None
        value = seen[-1]
        assert value is not None
        return value


@pytest.fixture(scope="module")
def prometheus(
    agent_lab: AgentLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's prometheus package (.ci/setup does)")
    home = tmp_path_factory.mktemp("prometheus")
    targets = "\n".join(
        f"      - targets: ['{node.address}:{DEFAULT_METRICS_PORT}']\n"
        f"        labels: {{node: {name}}}"
        for name, node in agent_lab.state.nodes.items()
    )
    (home / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n  - job_name: zflock\n    static_configs:\n" + targets + "\n"
    )
    port = free_port()
    log = home / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                binary, f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                return "Ready" in http_get(f"{server.url}/-/ready")
            except OSError:
                return False

        wait_until("prometheus to be ready", ready, timeout=60, interval=0.2)
        yield server
    finally:
        process.terminate()  # by its PID: the Popen we started
        try:
            process.wait(timeout=patience(20))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=patience(20))


def test_prometheus_scrapes_every_node(agent_lab: AgentLab, prometheus: Prometheus) -> None:
    for node in agent_lab.state.nodes:
        prometheus.wait_for(f'up{{job="zflock",node="{node}"}}', 1)
        info = prometheus.query(f'zflock_build_info{{node="{node}"}}')
        assert [i["metric"]["node"] for i in info] == [node]
        zfs = prometheus.query(f'zflock_zfs_info{{node="{node}"}}')
        assert zfs and zfs[0]["metric"]["implementation"]


def test_a_scrape_passes_promtool(agent_lab: AgentLab, prometheus: Prometheus) -> None:
    address = agent_lab.state.nodes["node1"].address
    text = http_get(f"http://{address}:{DEFAULT_METRICS_PORT}/metrics")
    assert "zflock_zfs_command_duration_seconds_bucket" in text  # the agent ran zfs already
    promtool = shutil.which("promtool")
    assert promtool is not None
    r = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def cli_json(lab: AgentLab, *args: str) -> Any:
    r = lab.cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_replication_and_move_as_the_cli_reported(
    agent_lab: AgentLab, prometheus: Prometheus
) -> None:
    lab = agent_lab
    assert lab.cli("create", "metered", "--on", "node1").returncode == 0
    lab.sh("node1", "head -c 2000000 /dev/urandom > /zflock/metered/data.bin")
    report = cli_json(lab, "replicate", "metered", "--to", "node2")
    [volume] = cli_json(lab, "ls", "metered")["volumes"]
    replica = next(c for c in volume["copies"] if c["node"] == "node2")
    assert replica["latest_snapshot"] == report["snapshot"]
    snapshot_time = replica["latest_snapshot_time"]

    pair = 'node="node1",volume="metered",peer="node2"'
    prometheus.wait_for(
        f"zflock_replication_last_snapshot_timestamp_seconds{{{pair}}}", snapshot_time
    )
    prometheus.wait_for(f"zflock_replication_sent_bytes_total{{{pair}}}", report["bytes"])
    # The lag Prometheus stored is the age of that snapshot at the scrape (the scrape's
    # own timestamp, not the query's), so the two are compared on the same sample.
    lag = f"zflock_replication_lag_seconds{{{pair}}}"
    skew = prometheus.value(f"{lag} - (timestamp({lag}) - {snapshot_time})")
    assert skew is not None and -0.1 <= skew <= 1.0, skew
    assert prometheus.value(f"zflock_replications_total{{{pair}}}") == 1

    moved = cli_json(lab, "move", "metered", "--to", "node2")
    assert moved["result"] == "moved" and moved["downtime_s"] > 0
    prometheus.wait_for('zflock_moves_total{node="node1",outcome="moved"}', 1)
    downtime = prometheus.wait_for(
        'zflock_move_downtime_seconds_sum{node="node1"}', moved["downtime_s"], tolerance=1e-3
    )
    assert prometheus.value('zflock_move_downtime_seconds_count{node="node1"}') == 1
    total = prometheus.value('zflock_move_duration_seconds_sum{node="node1"}')
    assert total == pytest.approx(moved["total_s"], abs=1e-3)
    assert downtime < total
    # node1 is not the primary any more: the pair's lag is node2's business now.
    assert prometheus.wait_for(f"count({lag}) or vector(0)", 0) == 0
    assert prometheus.value('zflock_jobs_running{node="node1",kind="move"}') == 0


def test_a_refused_replication_is_counted_by_reason(
    agent_lab: AgentLab, prometheus: Prometheus
) -> None:
    lab = agent_lab
    assert lab.cli("create", "twin", "--on", "node1").returncode == 0
    # An operator's own dataset where the replica would go: not ours to overwrite.
    lab.sh("node2", f"zfs create -o mountpoint=none {lab.ds('node2', 'twin')}")
    r = lab.cli("replicate", "twin", "--to", "node2")
    assert r.returncode != 0
    failures = 'zflock_replication_failures_total{node="node1",volume="twin",peer="node2"}'
    prometheus.wait_for(failures, 1)
    [series] = prometheus.query(failures)
    assert series["metric"]["reason"] == "conflict"


def test_a_fenced_primary_is_seen_and_alerted(agent_lab: AgentLab, prometheus: Prometheus) -> None:
    lab = agent_lab
    assert lab.cli("create", "fenced", "--on", "node1").returncode == 0
    dataset = lab.ds("node1", "fenced")
    # What a cutover that cannot settle leaves: read-only and unmounted (zfs-fuse
    # shows readonly=on only once the filesystem is unmounted).
    lab.sh("node1", f"zfs set readonly=on {dataset} && zfs unmount {dataset}")
    try:
        assert lab.cli("ls").returncode == 0  # the agent learns its copies when it lists them
        prometheus.wait_for('zflock_copy_fenced{node="node1",volume="fenced"}', 1)
        prometheus.wait_for('zflock_fenced_copies{node="node1"}', 1)

        def pending() -> bool:
            alerts = json.loads(http_get(f"{prometheus.url}/api/v1/alerts"))["data"]["alerts"]
            return any(
                a["labels"]["alertname"] == "ZflockFencedPrimary"
                and a["labels"]["volume"] == "fenced"
                and a["state"] == "pending"
                for a in alerts
            )

        wait_until("the ZflockFencedPrimary alert to be pending", pending, timeout=30)
    finally:
        lab.sh("node1", f"zfs set readonly=off {dataset} && zfs mount {dataset}")
    assert lab.cli("ls").returncode == 0
    prometheus.wait_for('zflock_fenced_copies{node="node1"}', 0)
    assert not prometheus.query('zflock_copy_fenced{node="node1"}')
