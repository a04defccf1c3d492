"""Zfs logic that needs no ZFS: argv building, the busy retry, capability checks.

The scripted Runner below stands in for the subprocess only to drive the
retry and refusal logic; every behaviour against ZFS itself is tested for
real in tests/zfs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from zflock.zfs import (
    Capabilities,
    Completed,
    DatasetBusy,
    InvalidName,
    Runner,
    Unsupported,
    Zfs,
    ZfsError,
    classify_error,
    receive_argv,
    send_argv,
)

FUSE = Capabilities(
    implementation="zfs-fuse",
    version=None,
    resume_tokens=False,
    receive_unmounted=False,
    holds=False,
    bookmarks=False,
    send_estimates=False,
    createtxg=True,
    list_parsable=False,
)


@dataclass(frozen=True)
class ScriptedRunner(Runner):
    """Answers run() from a script of stderr strings ("" = success)."""

    script: list[str] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        self.calls.append(tuple(argv))
        stderr = self.script.pop(0) if self.script else ""
        if stderr and check:
            raise classify_error(argv, 1, stderr)
        return Completed(tuple(argv), 1 if stderr else 0, b"", stderr.encode())

    async def spawn(self, argv, *, stdin, stdout, stderr, limit=1 << 20):  # type: ignore[no-untyped-def]
        raise AssertionError(f"nothing may run: {argv}")


def test_send_argv() -> None:
    assert send_argv("p/a@s2") == ["zfs", "send", "p/a@s2"]
    assert send_argv("p/a@s2", base="p/a@s1") == ["zfs", "send", "-i", "p/a@s1", "p/a@s2"]
    assert send_argv("p/a@s3", base="p/a@s1", intermediates=True) == [
        "zfs",
        "send",
        "-I",
        "p/a@s1",
        "p/a@s3",
    ]
    assert send_argv("p/a@s", replicate=True, props=True) == ["zfs", "send", "-R", "-p", "p/a@s"]
    assert send_argv("p/a@s", resume_token="1-abc-def") == ["zfs", "send", "-t", "1-abc-def"]
    assert send_argv("p/a@s2", base="p/a#b1") == ["zfs", "send", "-i", "p/a#b1", "p/a@s2"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"snapshot": "p/a"},
        {"snapshot": "p/a@s", "base": "p/a"},
        {"snapshot": "p/a@s", "intermediates": True},
        {"snapshot": "p/a@s", "base": "p/a#b", "intermediates": True},
        {"snapshot": "p/a@s", "resume_token": "-x"},
        {"snapshot": "p/a@s", "resume_token": "tok", "base": "p/a@r"},
        {"snapshot": "p/a@-s"},
    ],
)
def test_send_argv_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidName):
        send_argv(**kwargs)  # type: ignore[arg-type]


def test_receive_argv_force_only_when_asked() -> None:
    assert receive_argv("p/b") == ["zfs", "receive", "p/b"]
    assert receive_argv("p/b@s") == ["zfs", "receive", "p/b@s"]
    assert receive_argv("p/b", unmounted=True, resumable=True) == [
        "zfs",
        "receive",
        "-u",
        "-s",
        "p/b",
    ]
    assert receive_argv("p/b", force=True) == ["zfs", "receive", "-F", "p/b"]
    for kwargs in ({}, {"unmounted": True}, {"resumable": True}):
        assert "-F" not in receive_argv("p/b", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        receive_argv("-F")


async def test_mount_retries_busy_then_succeeds() -> None:
    busy = "cannot mount 'p/a': mountpoint or dataset is busy\n"
    runner = ScriptedRunner(script=[busy, busy, ""])
    await Zfs(runner, capabilities=FUSE).mount("p/a")
    assert runner.calls == [("zfs", "mount", "p/a")] * 3


async def test_mount_gives_up_on_lasting_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zflock.zfs.mounting.MOUNT_RETRY_SECONDS", 0.5)
    busy = "cannot mount 'p/a': mountpoint or dataset is busy\n"
    runner = ScriptedRunner(script=[busy] * 1000)
    with pytest.raises(DatasetBusy):
        await Zfs(runner, capabilities=FUSE).mount("p/a")
    assert 3 <= len(runner.calls) < 20  # backed off, did not spin


async def test_mount_and_unmount_are_idempotent() -> None:
    runner = ScriptedRunner(
        script=[
            "cannot mount 'p/a': filesystem already mounted\n",
            "cannot unmount 'p/a': not currently mounted\n",
        ]
    )
    zfs = Zfs(runner, capabilities=FUSE)
    await zfs.mount("p/a")
    await zfs.unmount("p/a")
    assert len(runner.calls) == 2


async def test_features_refused_before_running() -> None:
    runner = ScriptedRunner()
    zfs = Zfs(runner, capabilities=FUSE)
    with pytest.raises(Unsupported, match="receive unmounted"):
        async with zfs.receive("p/b", unmounted=True):
            pass
    with pytest.raises(Unsupported, match="resume tokens"):
        async with zfs.receive("p/b", resumable=True):
            pass
    with pytest.raises(Unsupported, match="resume tokens"):
        async with zfs.send("p/a@s", resume_token="1-abc"):
            pass
    with pytest.raises(Unsupported, match="bookmarks"):
        async with zfs.send("p/a@s", base="p/a#b"):
            pass
    assert await zfs.estimate_send_size("p/a@s") is None
    assert runner.calls == []


async def test_set_runs_one_command_per_property_on_zfs_fuse() -> None:
    runner = ScriptedRunner()
    await Zfs(runner, capabilities=FUSE).set("p/a", {"zflock:epoch": "3", "zflock:role": "x"})
    assert runner.calls == [
        ("zfs", "set", "zflock:epoch=3", "p/a"),
        ("zfs", "set", "zflock:role=x", "p/a"),
    ]
    runner = ScriptedRunner()
    openzfs = Capabilities(**{**vars(FUSE), "implementation": "openzfs", "version": "2.1.11"})
    await Zfs(runner, capabilities=openzfs).set("p/a", {"zflock:epoch": "3", "zflock:role": "x"})
    assert runner.calls == [("zfs", "set", "zflock:epoch=3", "zflock:role=x", "p/a")]


@dataclass(frozen=True)
class OverlapRunner(Runner):
    """Records when each command starts and ends; each takes a few loop turns, and one
    named property fails, so concurrency and ordering are visible."""

    events: list[tuple[str, str]] = field(default_factory=list)
    fail: str = ""

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        what = argv[2]
        self.events.append(("start", what))
        for _ in range(3):
            await asyncio.sleep(0)
        self.events.append(("end", what))
        if self.fail and what.startswith(self.fail):
            raise classify_error(argv, 1, "cannot set property: permission denied\n")
        return Completed(tuple(argv), 0, b"", b"")


async def test_set_in_steps_on_zfs_fuse_overlaps_a_step_and_orders_the_steps() -> None:
    runner = OverlapRunner()
    zfs = Zfs(runner, capabilities=FUSE)
    await zfs.set_in_steps("p/a", [{"zflock:by": "m/2"}, {"zflock:epoch": "2", "zflock:role": "p"}])
    assert runner.events == [
        ("start", "zflock:by=m/2"),
        ("end", "zflock:by=m/2"),  # the first step has landed before the second starts
        ("start", "zflock:epoch=2"),
        ("start", "zflock:role=p"),  # started before the other one ended: at once
        ("end", "zflock:epoch=2"),
        ("end", "zflock:role=p"),
    ]


async def test_set_in_steps_is_one_command_on_openzfs() -> None:
    runner = ScriptedRunner()
    openzfs = Capabilities(**{**vars(FUSE), "implementation": "openzfs", "version": "2.1.11"})
    await Zfs(runner, capabilities=openzfs).set_in_steps(
        "p/a", [{"zflock:by": "m/2"}, {}, {"readonly": "off"}]
    )
    assert runner.calls == [("zfs", "set", "zflock:by=m/2", "readonly=off", "p/a")]


async def test_a_failed_step_stops_the_steps_after_it_and_raises_its_error() -> None:
    runner = OverlapRunner(fail="zflock:epoch")
    zfs = Zfs(runner, capabilities=FUSE)
    with pytest.raises(ZfsError, match="permission denied"):
        await zfs.set_in_steps("p/a", [{"zflock:epoch": "2", "zflock:role": "p"}, {"x:y": "1"}])
    # the failed step's other command still finished; the next step never started
    assert ("end", "zflock:role=p") in runner.events
    assert all(what != "x:y=1" for _, what in runner.events)


async def test_write_at_once_sets_and_clears_together() -> None:
    runner = OverlapRunner()
    await Zfs(runner, capabilities=FUSE).write_at_once(
        "p/a", {"zflock:epoch": "2"}, clear=["zflock:move", "zflock:stale"]
    )
    starts = [what for kind, what in runner.events[:3]]
    assert starts == ["zflock:epoch=2", "zflock:move", "zflock:stale"]
    assert [kind for kind, _ in runner.events[:3]] == ["start"] * 3
    with pytest.raises(InvalidName):
        await Zfs(ScriptedRunner(), capabilities=FUSE).write_at_once("p/a", {}, clear=["Bad!"])


async def test_invalid_names_never_reach_the_runner() -> None:
    runner = ScriptedRunner()
    zfs = Zfs(runner, capabilities=FUSE)
    with pytest.raises(InvalidName):
        await zfs.create("p/a;rm -rf /")
    with pytest.raises(InvalidName):
        await zfs.destroy("p/a@s")
    with pytest.raises(InvalidName):
        await zfs.get("p/a", ["BAD"])
    with pytest.raises(InvalidName):
        await zfs.destroy_snapshot("p/a", "s/x")
    with pytest.raises(InvalidName):
        await zfs.create_pool("mirror", "/tmp/x")
    with pytest.raises(InvalidName):
        await zfs.create_pool("tank", "-o")
    assert runner.calls == []


@dataclass(frozen=True)
class ListingRunner(Runner):
    """Answers every run() with the same stdout (a listing), recording the argv."""

    stdout: str = ""
    calls: list[tuple[str, ...]] = field(default_factory=list)

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True
    ) -> Completed:
        self.calls.append(tuple(argv))
        return Completed(tuple(argv), 0, self.stdout.encode(), b"")


async def test_holds_of_many_snapshots_in_one_command() -> None:
    openzfs = Capabilities(**{**FUSE.__dict__, "implementation": "openzfs", "holds": True})
    listing = (
        "p/v@a\tzflock-base\tThu Dec  3 18:00 2026\n"
        "p/v@a\tbackup\tThu Dec  3 18:00 2026\n"
        "p/v@c\tzflock-base\tThu Dec  3 18:01 2026\n"
    )
    runner = ListingRunner(stdout=listing)
    zfs = Zfs(runner, capabilities=openzfs)
    found = await zfs.holds_of(["p/v@a", "p/v@b", "p/v@c"])
    assert found == {"p/v@a": ["backup", "zflock-base"], "p/v@c": ["zflock-base"]}
    assert runner.calls == [("zfs", "holds", "-H", "p/v@a", "p/v@b", "p/v@c")]
    assert await zfs.holds_of([]) == {} and len(runner.calls) == 1
    assert await zfs.holds("p/v@b") == []
    with pytest.raises(InvalidName):
        await zfs.holds_of(["p/v@a", "-r"])


async def test_holds_are_refused_where_the_probe_says_no() -> None:
    runner = ListingRunner()
    zfs = Zfs(runner, capabilities=FUSE)
    with pytest.raises(Unsupported, match="holds"):
        await zfs.holds_of(["p/v@a"])
    with pytest.raises(Unsupported, match="holds"):
        await zfs.held("p/v", "zflock-base")
    assert runner.calls == []
