"""The agent's Prometheus metrics: an `Observer` of typed events, served over HTTP.

Everything here is fed by events (zflock/events.py) as they happen; a scrape
never runs ZFS. What must be "now" at scrape time -- the replication lag --
is computed when Prometheus asks, from the newest replicated snapshot's
creation time kept in memory. After an agent restart the lag of a pair is
unknown (absent) until its next replication.

One `CollectorRegistry` per agent, never the library's global one, so that
several agents (tests, one process) keep their numbers apart. Served by
prometheus-client's own WSGI server in a daemon thread: the agent's event loop
never waits for a scrape. The metrics are documented in docs/metrics.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_wsgi_server
from prometheus_client.registry import Collector

from zflock.errors import ZflockError
from zflock.events import (
    MOVE_OUTCOMES,
    AgentStarted,
    CopiesListed,
    Event,
    JobEnded,
    JobStarted,
    MoveFinished,
    ReplicationFailed,
    ReplicationFinished,
    ScheduleLate,
    StaleCopySeen,
    ZfsCommandFinished,
)

log = logging.getLogger("zflock.agent.metrics")

# Buckets in seconds. Downtime: the target is about a second (docs/design.md);
# the tail shows hooks and slow receives. ZFS commands: milliseconds when healthy.
DOWNTIME_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
MOVE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
ZFS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class MetricsError(ZflockError):
    """The metrics endpoint cannot be served (e.g. its port is taken)."""


@dataclass
class _Pair:
    """What the agent knows about one volume's replica on one peer."""

    snapshot_time: int  # creation of the newest snapshot the peer holds (unix seconds)
    success_time: float  # when the last replication succeeded (unix seconds)


class _Knowledge(Collector):
    """State the exporter derives values from at scrape time (lag, fenced/stale copies).

    Written on the agent's event loop, read by the HTTP thread: one lock.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.pairs: dict[tuple[str, str], _Pair] = {}
        self.fenced: frozenset[str] = frozenset()
        # Stale: labelled so in the last listing, or a primary a peer proved stale since.
        self.stale_listed: frozenset[str] = frozenset()
        self.stale: dict[str, int] = {}  # volume -> the newer epoch seen elsewhere

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.lock:
            pairs = sorted(self.pairs.items())
            fenced, stale = sorted(self.fenced), sorted(self.stale_listed | set(self.stale))
        lag = GaugeMetricFamily(
            "zflock_replication_lag_seconds",
            "Age of the newest snapshot the replica holds (now minus its creation time).",
            labels=["volume", "peer"],
        )
        snap = GaugeMetricFamily(
            "zflock_replication_last_snapshot_timestamp_seconds",
            "Creation time of the newest snapshot the replica holds.",
            labels=["volume", "peer"],
        )
        success = GaugeMetricFamily(
            "zflock_replication_last_success_timestamp_seconds",
            "When the last replication of the volume to the peer succeeded.",
            labels=["volume", "peer"],
        )
        for (volume, peer), pair in pairs:
            lag.add_metric([volume, peer], max(now - pair.snapshot_time, 0.0))
            snap.add_metric([volume, peer], pair.snapshot_time)
            success.add_metric([volume, peer], pair.success_time)
        yield from (lag, snap, success)
        yield GaugeMetricFamily(
            "zflock_fenced_copies",
            "Primaries on this node that are fenced (read-only, or an unfinished move's marker).",
            value=len(fenced),
        )
        yield GaugeMetricFamily(
            "zflock_stale_copies",
            "Copies on this node known to be stale (a peer holds a higher epoch).",
            value=len(stale),
        )
        per_volume = GaugeMetricFamily(
            "zflock_copy_fenced",
            "1 for each fenced primary on this node, by volume.",
            labels=["volume"],
        )
        for volume in fenced:
            per_volume.add_metric([volume], 1)
        yield per_volume
        per_volume = GaugeMetricFamily(
            "zflock_copy_stale",
            "1 for each copy on this node known to be stale, by volume.",
            labels=["volume"],
        )
        for volume in stale:
            per_volume.add_metric([volume], 1)
        yield per_volume


class Metrics:
    """The exporter: an Observer that turns events into this agent's metrics."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # No `_created` series beside every counter and histogram: Prometheus 2 does not
        # use them, and they would double the series per volume and peer. (The library's
        # switch is process-wide; an agent is one process.)
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.build = Info("zflock_build", "The agent's node name and zflock version.", registry=r)
        self.zfs_info = Info("zflock_zfs", "The ZFS this agent runs on.", registry=r)
        self.knowledge = _Knowledge(clock)
        r.register(self.knowledge)
        pair = ["volume", "peer"]
        self.sent = Counter(
            "zflock_replication_sent_bytes",
            "Bytes sent by successful replications.",
            pair,
            registry=r,
        )
        self.stream_seconds = Counter(
            "zflock_replication_stream_seconds",
            "Seconds spent streaming by successful replications (throughput: rate of "
            "sent_bytes over rate of this).",
            pair,
            registry=r,
        )
        self.throughput = Gauge(
            "zflock_replication_last_throughput_bytes_per_second",
            "Stream throughput of the last replication that sent data.",
            pair,
            registry=r,
        )
        self.runs = Counter("zflock_replications", "Successful replication runs.", pair, registry=r)
        self.failures = Counter(
            "zflock_replication_failures",
            "Failed replication runs, by reason.",
            [*pair, "reason"],
            registry=r,
        )
        self.moves = Counter(
            "zflock_moves", "Moves started on this node, by outcome.", ["outcome"], registry=r
        )
        for outcome in MOVE_OUTCOMES:
            self.moves.labels(outcome)
        self.downtime = Histogram(
            "zflock_move_downtime_seconds",
            "Downtime of completed moves: source fenced to destination writable and mounted.",
            buckets=DOWNTIME_BUCKETS,
            registry=r,
        )
        self.move_duration = Histogram(
            "zflock_move_duration_seconds",
            "Total time of moves, pre-copy included, whatever their outcome.",
            buckets=MOVE_BUCKETS,
            registry=r,
        )
        self.zfs_seconds = Histogram(
            "zflock_zfs_command_duration_seconds",
            "Duration of zfs/zpool commands (streams excluded), by subcommand.",
            ["command", "subcommand"],
            buckets=ZFS_BUCKETS,
            registry=r,
        )
        self.zfs_failures = Counter(
            "zflock_zfs_command_failures",
            "zfs/zpool commands that exited non-zero, by subcommand.",
            ["command", "subcommand"],
            registry=r,
        )
        self.jobs = Gauge("zflock_jobs_running", "Jobs running, by kind.", ["kind"], registry=r)
        for kind in ("replicate", "move"):
            self.jobs.labels(kind)
        self.lateness = Histogram(
            "zflock_scheduler_lateness_seconds",
            "How late scheduled replications start (fed by the scheduler, issue 11).",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )

    def emit(self, event: Event) -> None:
        k = self.knowledge
        match event:
            case AgentStarted():
                self.build.info({"node": event.node, "version": event.version})
                self.zfs_info.info(
                    {"implementation": event.zfs_implementation, "version": event.zfs_version}
                )
            case ReplicationFinished():
                labels = (event.volume, event.peer)
                self.runs.labels(*labels).inc()
                self.sent.labels(*labels).inc(event.bytes)
                self.stream_seconds.labels(*labels).inc(event.stream_seconds)
                if event.bytes > 0 and event.stream_seconds > 0:
                    self.throughput.labels(*labels).set(event.bytes / event.stream_seconds)
                with k.lock:
                    k.pairs[labels] = _Pair(event.snapshot_time, event.finished_at)
            case ReplicationFailed():
                self.failures.labels(event.volume, event.peer, event.reason).inc()
            case MoveFinished():
                self.moves.labels(event.outcome).inc()
                self.move_duration.observe(event.total_seconds)
                if event.downtime_seconds is not None:
                    self.downtime.observe(event.downtime_seconds)
                if event.outcome == "moved":
                    self._forget(event.volume)  # its replication is the new primary's now
            case ZfsCommandFinished():
                self.zfs_seconds.labels(event.command, event.subcommand).observe(event.seconds)
                if not event.ok:
                    self.zfs_failures.labels(event.command, event.subcommand).inc()
            case CopiesListed():
                with k.lock:
                    k.fenced = event.fenced
                    k.stale_listed = event.stale
                    k.stale = {v: e for v, e in k.stale.items() if v in event.primaries}
                    gone = {p for p in k.pairs if p[0] not in event.primaries}
                    for key in gone:
                        del k.pairs[key]
            case StaleCopySeen():
                with k.lock:
                    k.stale[event.volume] = event.newer_epoch
            case JobStarted():
                self.jobs.labels(event.kind).inc()
            case JobEnded():
                self.jobs.labels(event.kind).dec()
            case ScheduleLate():
                self.lateness.observe(event.seconds)

    def _forget(self, volume: str) -> None:
        with self.knowledge.lock:
            for key in [p for p in self.knowledge.pairs if p[0] == volume]:
                del self.knowledge.pairs[key]
            self.knowledge.stale.pop(volume, None)

    def text(self) -> bytes:
        """The exposition text, as a scrape sees it."""
        return generate_latest(self.registry)


class MetricsServer:
    """prometheus-client's HTTP server for one registry, in a daemon thread."""

    def __init__(self, metrics: Metrics, address: str, port: int) -> None:
        self.metrics = metrics
        self.address = address
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._server, self._thread = start_wsgi_server(
                self.port, self.address, self.metrics.registry
            )
        except OSError as exc:
            where = f"{self.address}:{self.port}"
            raise MetricsError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]  # the real one when 0 was asked
        log.info("metrics on http://%s:%d/metrics", self.address, self.port)

    def stop(self) -> None:
        """Stop serving (blocks up to the server's poll interval, 0.5 s)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
