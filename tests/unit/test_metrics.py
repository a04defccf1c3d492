"""The exporter fed with typed events: what a scrape shows, parsed by prometheus-client itself."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from zflock.agent.metrics import Metrics, MetricsError, MetricsServer
from zflock.events import (
    AgentStarted,
    CopiesListed,
    FanOut,
    JobEnded,
    JobStarted,
    MoveFinished,
    ReplicationFailed,
    ReplicationFinished,
    ScheduleLate,
    StaleCopySeen,
    ZfsCommandFinished,
)

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> list[Sample]:
    text = metrics.text().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The one sample called `name` whose labels include `labels`; None if there is none."""
    found = [
        s.value for s in samples(metrics) if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def finished(volume: str = "db", peer: str = "node2", **kw: float) -> ReplicationFinished:
    fields: dict[str, float] = dict(
        bytes=4096, seconds=1.5, stream_seconds=0.5, snapshot_time=NOW - 30, finished_at=NOW - 20
    )
    fields.update(kw)
    return ReplicationFinished(
        volume=volume, peer=peer, bytes=int(fields["bytes"]), seconds=fields["seconds"],
        stream_seconds=fields["stream_seconds"], snapshot_time=int(fields["snapshot_time"]),
        finished_at=fields["finished_at"],
    )  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(clock=clock)


def test_build_and_zfs_info(metrics: Metrics) -> None:
    metrics.emit(AgentStarted("node1", "0.9.0", "zfs-fuse", "unknown"))
    assert value(metrics, "zflock_build_info", node="node1", version="0.9.0") == 1
    assert value(metrics, "zflock_zfs_info", implementation="zfs-fuse", version="unknown") == 1


def test_lag_is_computed_at_scrape_time(metrics: Metrics, clock: Clock) -> None:
    assert value(metrics, "zflock_replication_lag_seconds") is None  # unknown, not 0
    metrics.emit(finished())
    assert value(metrics, "zflock_replication_lag_seconds", volume="db", peer="node2") == 30
    clock.now += 12.5
    assert value(metrics, "zflock_replication_lag_seconds", volume="db", peer="node2") == 42.5
    snap = "zflock_replication_last_snapshot_timestamp_seconds"
    assert value(metrics, snap, volume="db", peer="node2") == NOW - 30
    success = "zflock_replication_last_success_timestamp_seconds"
    assert value(metrics, success, volume="db", peer="node2") == NOW - 20
    # A newer snapshot replicated: the lag drops.
    metrics.emit(finished(snapshot_time=NOW + 11))
    assert value(metrics, "zflock_replication_lag_seconds", volume="db", peer="node2") == 1.5


def test_bytes_runs_and_throughput(metrics: Metrics) -> None:
    metrics.emit(finished(bytes=1000, stream_seconds=0.5))
    metrics.emit(finished(bytes=3000, stream_seconds=1.5))
    metrics.emit(finished(bytes=0, stream_seconds=0.0))  # up to date: throughput kept
    pair = {"volume": "db", "peer": "node2"}
    assert value(metrics, "zflock_replication_sent_bytes_total", **pair) == 4000
    assert value(metrics, "zflock_replication_stream_seconds_total", **pair) == 2.0
    assert value(metrics, "zflock_replications_total", **pair) == 3
    throughput = "zflock_replication_last_throughput_bytes_per_second"
    assert value(metrics, throughput, **pair) == 2000


def test_failures_by_reason(metrics: Metrics) -> None:
    metrics.emit(ReplicationFailed("db", "node2", "unreachable"))
    metrics.emit(ReplicationFailed("db", "node2", "unreachable"))
    metrics.emit(ReplicationFailed("db", "node3", "conflict"))
    name = "zflock_replication_failures_total"
    assert value(metrics, name, volume="db", peer="node2", reason="unreachable") == 2
    assert value(metrics, name, volume="db", peer="node3", reason="conflict") == 1
    assert value(metrics, name, volume="db", peer="node2", reason="conflict") is None


def test_moves(metrics: Metrics) -> None:
    for outcome in ("moved", "rolled_back", "in_doubt", "failed"):
        assert value(metrics, "zflock_moves_total", outcome=outcome) == 0  # present from start
    metrics.emit(MoveFinished("db", "node2", "moved", 0.61, 17.3))
    metrics.emit(MoveFinished("db", "node1", "moved", 0.4, 3.0))
    metrics.emit(MoveFinished("web", "node2", "rolled_back", None, 5.0))
    assert value(metrics, "zflock_moves_total", outcome="moved") == 2
    assert value(metrics, "zflock_moves_total", outcome="rolled_back") == 1
    assert value(metrics, "zflock_move_downtime_seconds_count") == 2
    assert value(metrics, "zflock_move_downtime_seconds_sum") == pytest.approx(1.01)
    assert value(metrics, "zflock_move_downtime_seconds_bucket", le="0.5") == 1
    assert value(metrics, "zflock_move_duration_seconds_count") == 3
    assert value(metrics, "zflock_move_duration_seconds_sum") == pytest.approx(25.3)


def test_a_moved_volume_leaves_this_nodes_replication_metrics(metrics: Metrics) -> None:
    metrics.emit(finished("db"))
    metrics.emit(finished("web"))
    metrics.emit(StaleCopySeen("db", 3, 4))
    metrics.emit(MoveFinished("db", "node2", "moved", 0.5, 2.0))
    assert value(metrics, "zflock_replication_lag_seconds", volume="db") is None
    assert value(metrics, "zflock_replication_lag_seconds", volume="web") is not None
    assert value(metrics, "zflock_stale_copies") == 0


def test_zfs_commands(metrics: Metrics) -> None:
    metrics.emit(ZfsCommandFinished("zfs", "snapshot", 0.02, True))
    metrics.emit(ZfsCommandFinished("zfs", "snapshot", 0.03, False))
    metrics.emit(ZfsCommandFinished("zpool", "list", 0.2, True))
    hist = "zflock_zfs_command_duration_seconds"
    assert value(metrics, f"{hist}_count", command="zfs", subcommand="snapshot") == 2
    assert value(metrics, f"{hist}_sum", command="zfs", subcommand="snapshot") == 0.05
    assert value(metrics, f"{hist}_count", command="zpool", subcommand="list") == 1
    fails = "zflock_zfs_command_failures_total"
    assert value(metrics, fails, command="zfs", subcommand="snapshot") == 1


def test_jobs_running(metrics: Metrics) -> None:
    assert value(metrics, "zflock_jobs_running", kind="move") == 0
    metrics.emit(JobStarted("move"))
    metrics.emit(JobStarted("replicate"))
    metrics.emit(JobStarted("replicate"))
    metrics.emit(JobEnded("replicate", "failed"))
    assert value(metrics, "zflock_jobs_running", kind="move") == 1
    assert value(metrics, "zflock_jobs_running", kind="replicate") == 1


def test_fenced_and_stale_copies(metrics: Metrics) -> None:
    assert value(metrics, "zflock_fenced_copies") == 0
    metrics.emit(finished("gone"))
    metrics.emit(CopiesListed(fenced=frozenset({"db"}), primaries=frozenset({"db", "web"})))
    assert value(metrics, "zflock_fenced_copies") == 1
    assert value(metrics, "zflock_copy_fenced", volume="db") == 1
    assert value(metrics, "zflock_copy_fenced", volume="web") is None
    # A volume no longer primary here: its replication lag is not this node's to report.
    assert value(metrics, "zflock_replication_lag_seconds", volume="gone") is None
    metrics.emit(StaleCopySeen("web", 3, 5))
    assert value(metrics, "zflock_stale_copies") == 1
    assert value(metrics, "zflock_copy_stale", volume="web") == 1
    # The next listing replaces the last: db settled, web became a replica.
    metrics.emit(CopiesListed(fenced=frozenset(), primaries=frozenset({"db"})))
    assert value(metrics, "zflock_fenced_copies") == 0
    assert value(metrics, "zflock_stale_copies") == 0
    # A copy the listing shows labelled stale (zflock:stale) counts until a listing says not.
    metrics.emit(CopiesListed(frozenset(), frozenset({"db"}), stale=frozenset({"old"})))
    assert value(metrics, "zflock_copy_stale", volume="old") == 1
    metrics.emit(CopiesListed(frozenset(), frozenset({"db"})))
    assert value(metrics, "zflock_stale_copies") == 0


def test_scheduler_lateness_is_registered_and_fed(metrics: Metrics) -> None:
    assert value(metrics, "zflock_scheduler_lateness_seconds_count") == 0
    metrics.emit(ScheduleLate(0.3))
    assert value(metrics, "zflock_scheduler_lateness_seconds_count") == 1


def test_two_agents_in_one_process_keep_their_numbers_apart() -> None:
    one, two = Metrics(), Metrics()
    one.emit(finished(bytes=10))
    assert value(one, "zflock_replication_sent_bytes_total") == 10
    assert value(two, "zflock_replication_sent_bytes_total") is None


def test_names_follow_the_conventions(metrics: Metrics) -> None:
    metrics.emit(AgentStarted("node1", "0.9.0", "zfs-fuse", "unknown"))
    metrics.emit(finished())
    metrics.emit(ReplicationFailed("db", "node2", "busy"))
    metrics.emit(ZfsCommandFinished("zfs", "list", 0.01, False))
    families = list(text_string_to_metric_families(metrics.text().decode()))
    for family in families:
        assert family.name.startswith("zflock_"), family.name
        for sample in family.samples:
            assert set(sample.labels) <= {
                "node", "version", "implementation", "volume", "peer", "reason", "outcome",
                "command", "subcommand", "kind", "le",
            }, sample  # fmt: skip


class Boom:
    def emit(self, event: object) -> None:
        raise RuntimeError("observer bug")


def test_fan_out_survives_a_failing_observer(metrics: Metrics) -> None:
    fan = FanOut([Boom(), metrics])  # type: ignore[list-item]
    fan.emit(JobStarted("move"))
    assert value(metrics, "zflock_jobs_running", kind="move") == 1


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    served = MetricsServer(metrics, "127.0.0.1", 0)
    served.start()
    yield served
    served.stop()


def test_served_over_http(server: MetricsServer, metrics: Metrics) -> None:
    metrics.emit(finished(bytes=123))
    url = f"http://127.0.0.1:{server.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["zflock_replication_sent_bytes"].samples[0].value == 123


def test_a_taken_port_is_a_clear_error(server: MetricsServer, metrics: Metrics) -> None:
    second = MetricsServer(metrics, "127.0.0.1", server.port)
    with pytest.raises(MetricsError, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
        second.start()
