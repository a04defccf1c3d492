"""The agent's edge to the events: failure categories, move outcomes, fenced copies,
timed zfs commands, and the `[metrics]` keys of agent.toml."""

from __future__ import annotations

import asyncio
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.locks import VolumeBusy
from zflock.agent.observing import (
    ObservedRunner,
    copies_listed,
    failure_reason,
    move_outcome,
    stale_copy,
    zfs_command,
)
from zflock.cluster.config import ConfigError, MetricsConfig, load_agent_config
from zflock.events import (
    FAILURE_REASONS,
    MOVE_OUTCOMES,
    Event,
    FailureReason,
    MoveOutcome,
    StaleCopySeen,
    ZfsCommandFinished,
)
from zflock.move.driver import MoveFailed, MoveInDoubt
from zflock.replication.conflicts import EpochNewerOnDestination, SourceHasNoSnapshots
from zflock.replication.driver import VerifyFailed
from zflock.replication.zfs_endpoint import ReceiveRefused
from zflock.rpc.errors import HostKeyMismatch, NodeUnreachable, RemoteError
from zflock.rpc.messages import VolumeInfo
from zflock.zfs.errors import DatasetBusy, OutOfSpace, StreamMismatch, ZfsError


def test_the_literals_and_their_tuples_agree() -> None:
    assert set(typing.get_args(FailureReason)) == set(FAILURE_REASONS)
    assert set(typing.get_args(MoveOutcome)) == set(MOVE_OUTCOMES)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (asyncio.CancelledError(), "cancelled"),
        (EpochNewerOnDestination("node1", 3, "node2", 4), "stale_source"),
        (SourceHasNoSnapshots("tank/zflock/db"), "conflict"),
        (ReceiveRefused("not ours"), "conflict"),
        (NodeUnreachable("node2", "connection refused"), "unreachable"),
        (HostKeyMismatch("node2", "host key mismatch"), "unreachable"),
        (RemoteError("node2", "OutOfSpace", "out of space"), "no_space"),
        (RemoteError("node2", "VolumeBusy", "busy"), "busy"),
        (RemoteError("node2", "ReceiveRefused", "not ours"), "conflict"),
        (RemoteError("node2", "SomethingNew", "?"), "remote"),
        (VolumeBusy("db", "move to node2"), "busy"),
        (DatasetBusy("busy"), "busy"),
        (OutOfSpace("full"), "no_space"),
        (VerifyFailed("guid"), "verify"),
        (StreamMismatch("bad stream"), "verify"),
        (ZfsError("exit 1"), "zfs"),
        (RuntimeError("bug"), "other"),
    ],
)
def test_failure_reason(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (None, "moved"),
        (MoveInDoubt("?"), "in_doubt"),
        (MoveFailed("rolled back"), "rolled_back"),
        (VolumeBusy("db", "x"), "failed"),
        (asyncio.CancelledError(), "failed"),
    ],
)
def test_move_outcome(exc: BaseException | None, outcome: str) -> None:
    assert move_outcome(exc) == outcome


def test_stale_copy_only_from_a_newer_epoch() -> None:
    exc = EpochNewerOnDestination("node1", 3, "node2", 5)
    assert stale_copy("db", exc) == StaleCopySeen("db", 3, 5)
    assert stale_copy("db", NodeUnreachable("node2", "x")) is None


def copy(name: str, role: str, *, readonly: bool = False, move: str | None = None) -> VolumeInfo:
    return VolumeInfo(
        name=name, node="node1", id="i", role=role, epoch=1, origin="node1", mountpoint="/m",
        mounted=not readonly, readonly=readonly, used=0, referenced=0, quota=None, snapshots=1,
        latest_snapshot=None, latest_snapshot_time=None, move=move,
    )  # fmt: skip


def test_copies_listed_finds_fenced_primaries() -> None:
    listed = copies_listed(
        [
            copy("ok", "primary"),
            copy("cutover", "primary", readonly=True),
            copy("marked", "primary", move="m1:node2:2"),
            copy("replica", "replica", readonly=True),
        ]
    )
    assert listed.fenced == {"cutover", "marked"}
    assert listed.primaries == {"ok", "cutover", "marked"}
    assert listed.stale == set()


@dataclass(frozen=True)
class Labelled:
    """A listed copy with the `stale` label (zflock:stale) of docs/move.md."""

    name: str
    role: str
    readonly: bool
    move: str | None
    stale: str | None


def test_copies_listed_finds_stale_copies() -> None:
    rows = [Labelled("lost", "replica", True, None, "4/superseded/m1"),
            Labelled("fine", "replica", True, None, None)]  # fmt: skip
    assert copies_listed(rows).stale == {"lost"}  # type: ignore[arg-type]


@given(st.lists(st.text(max_size=40), max_size=4))
def test_zfs_command_labels_are_bounded(argv: list[str]) -> None:
    event = zfs_command(argv, 0.1, True)
    assert event.command in ("zfs", "zpool", "other", "?")
    assert event.subcommand == "other" or (
        event.subcommand.isascii() and len(event.subcommand) <= 21 and event.subcommand.islower()
    )


def test_zfs_command_names_the_subcommand() -> None:
    assert zfs_command(["zfs", "snapshot", "-o", "x=y", "a@b"], 0.1, True) == (
        ZfsCommandFinished("zfs", "snapshot", 0.1, True)
    )
    assert zfs_command(["/sbin/zpool", "list"], 0.1, False).command == "zpool"
    assert zfs_command(["zfs", "tank/zflock@snap-1"], 0.1, True).subcommand == "other"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


async def test_observed_runner_times_every_command() -> None:
    seen = Recorder()
    runner = ObservedRunner(observer=seen)
    await runner.run(["true", "status"])
    await runner.run(["sh", "-c", "exit 3"], check=False)
    assert [(e.subcommand, e.ok) for e in seen.events if isinstance(e, ZfsCommandFinished)] == [
        ("status", True),
        ("other", False),
    ]
    assert all(isinstance(e, ZfsCommandFinished) and e.seconds >= 0 for e in seen.events)


AGENT = 'node = "node1"\npool_root = "tank/zflock"\n'


def load(tmp_path: Path, extra: str) -> MetricsConfig | None:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT + extra)
    return load_agent_config(path).metrics


def test_metrics_config(tmp_path: Path) -> None:
    assert load(tmp_path, "") == MetricsConfig("127.0.0.1", 9574)
    assert load(tmp_path, '[metrics]\nlisten = "10.0.0.11:9100"\n') == MetricsConfig(
        "10.0.0.11", 9100
    )
    assert load(tmp_path, '[metrics]\nlisten = "[::1]:9574"\n') == MetricsConfig("::1", 9574)
    assert load(tmp_path, 'metrics = { listen = "0.0.0.0:9574" }\n') == MetricsConfig(
        "0.0.0.0", 9574
    )
    assert load(tmp_path, "[metrics]\nenabled = false\n") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('listen = "127.0.0.1"', "metrics.listen: '127.0.0.1' is not ADDRESS:PORT"),
        ('listen = "127.0.0.1:0"', "metrics.listen"),
        ('listen = "127.0.0.1:70000"', "metrics.listen"),
        ('listen = ":9574"', "metrics.listen"),
        ('listen = "no way:9574"', "metrics.listen"),
        ("listen = 9574", "metrics.listen: expected str"),
        ('enabled = "no"', "metrics.enabled: expected bool"),
        ("port = 9574", "metrics.port: unknown key"),
    ],
)
def test_bad_metrics_config_names_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load(tmp_path, f"[metrics]\n{text}\n")
