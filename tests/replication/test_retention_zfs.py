"""Pruning after each sync on real ZFS, through the endpoints, without agents.

A compressed timeline: snapshots named at an injected clock (ten minutes apart,
taken in milliseconds), each replicated by the driver and followed by
`prune_after_sync` with the same clock. At every step both sides hold exactly
what the pure decision (retention.py, replayed on a model of both histories)
keeps, the common base survives, and the next sync is an incremental. The
OpenZFS-only tests (holds, the cursor bookmark, a stalled stream resumed) skip
where the capability probe says the feature is missing, and fail in the
OpenZFS tier (tests/openzfs-vm) instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import ZfsNode
from tests.zfsstreams import need, send_bytes
from zflock.cluster.ownership import Ownership, ownership_properties
from zflock.errors import ZflockError
from zflock.replication.driver import replicate
from zflock.replication.endpoint import PruneRequest, SourceIdentity
from zflock.replication.history import diff
from zflock.replication.model import PlanOptions, ReplicaInfo, SnapRef
from zflock.replication.naming import snapshot_name
from zflock.replication.pruning import PruneReport, PruneRules, prune_after_sync
from zflock.replication.retention import PeerHistory, PruneRefused, parse_keep, plan_retention
from zflock.replication.zfs_endpoint import ZfsReceiver
from zflock.replication.zfs_prune import BASE_HOLD, cursor_name
from zflock.replication.zfs_sender import ZfsSender
from zflock.zfs import DatasetBusy, ZfsError

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=10)
VOLUME_ID = "5d0c3c8e-1b7a-4f3e-8a4d-0f6b2c9e7a11"
IDENTITY = SourceIdentity(volume="vol", volume_id=VOLUME_ID, epoch=1, origin="a", node="a")


@dataclass
class Pair:
    src: ZfsNode
    dst: ZfsNode
    vol: str
    target: str
    sender: ZfsSender
    receiver: ZfsReceiver
    seq: int = 0
    synced: ReplicaInfo | None = None  # the replica as the last sync's plan tells it

    async def write_and_snapshot(self, at: datetime, size: int = 20_000) -> str:
        self.src.path(self.vol, f"f{self.seq}").write_bytes(os.urandom(size))
        name = snapshot_name(at, self.seq)
        self.seq += 1
        await self.src.zfs.snapshot(self.vol, name)
        return name

    async def sync(self) -> list[str]:
        caps = [await n.zfs.capabilities() for n in (self.src, self.dst)]
        options = PlanOptions(resume_supported=all(c.resume_tokens for c in caps))
        outcome = await replicate(self.sender, self.receiver, IDENTITY, options)
        self.synced = outcome.replica
        return [s.header.kind for s in outcome.steps]

    async def prune(
        self,
        rules: PruneRules,
        at: datetime,
        others: dict[str, object] | None = None,
        replica_state: ReplicaInfo | None = None,
    ) -> PruneReport:
        return await prune_after_sync(
            self.sender, self.receiver, IDENTITY, rules, peer="b",
            others=others or {}, now=at, replica_state=replica_state,  # type: ignore[arg-type]
        )  # fmt: skip

    async def names(self) -> tuple[list[str], list[str]]:
        return (
            [s.name for s in await self.src.zfs.list_snapshots(self.vol)],
            [s.name for s in await self.dst.zfs.list_snapshots(self.target)],
        )


@pytest.fixture
async def pair(zfs_pair: tuple[ZfsNode, ZfsNode], src_root: str, dst_root: str) -> Pair:
    src, dst = zfs_pair
    vol, target = f"{src_root}/vol", f"{dst_root}/vol"
    primary = Ownership(volume="vol", id=VOLUME_ID, epoch=1, role="primary", origin="a", seq=0)
    await src.zfs.create(vol, ownership_properties(primary))
    sender = ZfsSender(src.zfs, vol, "a")
    receiver = ZfsReceiver(dst.zfs, target, f"{dst.mount_root}/vol-mnt", "b")
    return Pair(src, dst, vol, target, sender, receiver)


def rules(keep: str, keep_replica: str, targets: tuple[str, ...] | None = ("b",)) -> PruneRules:
    return PruneRules(parse_keep(keep), parse_keep(keep_replica), targets)


def model_prune(
    primary: list[SnapRef], replica: list[SnapRef], r: PruneRules, now: datetime
) -> tuple[list[SnapRef], list[SnapRef]]:
    """The pure decision, replayed: replica first (its peer: the primary), then the primary."""
    back = plan_retention(replica, r.keep_replica, now, [PeerHistory("a", primary)])
    replica = [s for s in replica if s not in back.destroy]
    gone = plan_retention(primary, r.keep, now, [PeerHistory("b", replica)]).destroy
    return [s for s in primary if s not in gone], replica


@pytest.mark.parametrize(
    ("keep", "keep_replica"),
    [("last=2", "last=3"), ("1x30m(keep=all) | 2x1h", "last=1, 1x1h | 1x2h")],
)
async def test_compressed_timeline_keeps_what_the_rules_say_and_the_base(
    pair: Pair, keep: str, keep_replica: str
) -> None:
    r = rules(keep, keep_replica)
    model_src: list[SnapRef] = []
    model_dst: list[SnapRef] = []
    for step in range(14):  # 2 h 20 min of snapshots, ten minutes apart
        now = T0 + step * STEP
        name = await pair.write_and_snapshot(now)
        kinds = await pair.sync()
        assert kinds == (["full"] if step == 0 else ["incremental"]), (step, kinds)
        # Every other prune is planned from the replica as the sync's plan tells it
        # (a cycle's way: driver.Outcome.replica), the others ask the replica.
        predicted = pair.synced if step % 2 else None
        assert step < 2 or (predicted is not None) == bool(step % 2), step
        report = await pair.prune(r, now, replica_state=predicted)
        assert report.errors == [] and report.primary.skipped is None, report

        ref = SnapRef(name, guid=step, order=step)
        model_src.append(ref)
        base = diff(model_src, model_dst).source_base  # -I: everything after the base
        model_dst += model_src[model_src.index(base) + 1 :] if base else model_src
        model_src, model_dst = model_prune(model_src, model_dst, r, now)
        on_src, on_dst = await pair.names()
        assert on_src == [s.name for s in model_src], step
        assert on_dst == [s.name for s in model_dst], step
        assert on_src[-1] == on_dst[-1] == name  # the common base: the newest, both sides
    assert len(on_src) < 14 and len(on_dst) < 14  # something was pruned on each side


async def test_receiver_refuses_a_request_for_its_newest_common_snapshot(pair: Pair) -> None:
    for step in range(3):
        await pair.write_and_snapshot(T0 + step * STEP)
        await pair.sync()
    # The primary lost its newest (an operator destroyed it), so the replica's newest
    # common snapshot with it is the one before its own newest.
    newest = (await pair.sender.source()).snapshots[-1]
    await pair.src.zfs.destroy_snapshot(pair.vol, newest.name)
    source = list((await pair.sender.source()).snapshots)
    state = await pair.receiver.state()
    base = diff(source, state.snapshots).destination_base
    assert base is not None and base.guid != state.snapshots[-1].guid
    before = await pair.names()
    for doomed, why in (
        ([state.snapshots[0], base], "it is the newest common snapshot with a"),
        ([state.snapshots[-1]], "it is the newest snapshot"),
    ):
        request = PruneRequest(
            keep="last=1", now=(T0 + 3 * STEP).timestamp(), source_snapshots=source,
            destroy=doomed,
        )  # fmt: skip
        with pytest.raises(PruneRefused, match=f"{why}; nothing was destroyed"):
            await pair.receiver.prune(IDENTITY, request)
        assert await pair.names() == before
    with pytest.raises(PruneRefused, match="bad clock"):
        await pair.receiver.prune(IDENTITY, PruneRequest(keep="last=1", now=float("inf")))
    with pytest.raises(ZflockError, match="invalid keep rules"):
        await pair.receiver.prune(IDENTITY, PruneRequest(keep="forever", now=0.0))
    assert await pair.names() == before
    # What its own decision allows goes.
    allowed = PruneRequest(keep="last=1", now=(T0 + 3 * STEP).timestamp(),
                           source_snapshots=source, destroy=[state.snapshots[0]])  # fmt: skip
    answer = await pair.receiver.prune(IDENTITY, allowed)
    assert [s.guid for s in answer.destroyed] == [state.snapshots[0].guid]
    # Not a replica of this volume: refused like a receive.
    before = await pair.names()
    other = SourceIdentity(volume="vol", volume_id="other-id", epoch=1, origin="a", node="a")
    with pytest.raises(ZflockError, match="belongs to another volume"):
        await pair.receiver.prune(other, PruneRequest(keep="last=1", now=0.0))
    assert await pair.names() == before


async def test_a_prune_planned_from_a_wrong_replica_state_keeps_more(pair: Pair) -> None:
    """The cycle plans the replica's prune from the state its sync's plan tells, not
    from a read (history.after_plain_steps). Given a state that claims a snapshot the
    replica lacks, the request asks for the replica's real newest common snapshot:
    the replica refuses it whole, and the primary, without the replica's answer,
    keeps everything that could be its base."""
    for step in range(3):
        await pair.write_and_snapshot(T0 + step * STEP)
        await pair.sync()
    await pair.write_and_snapshot(T0 + 3 * STEP)  # on the primary only
    real = await pair.receiver.state()
    newest = (await pair.sender.source()).snapshots[-1]
    claimed = replace(
        real, snapshots=(*real.snapshots, replace(newest, order=real.snapshots[-1].order + 1))
    )
    before = await pair.names()
    report = await pair.prune(rules("last=1", "last=1"), T0 + 3 * STEP, replica_state=claimed)
    assert report.replica.error is not None, report
    # Refused by the replica's newest snapshot, its real base with the primary.
    assert f"@{before[1][-1]} " in report.replica.error, report.replica.error
    assert report.replica.error.endswith("nothing was destroyed"), report.replica.error
    assert await pair.names() == before  # neither side lost anything
    # Asked, the replica's real state prunes as the rules say, and the base stays.
    report = await pair.prune(rules("last=1", "last=1"), T0 + 3 * STEP)
    assert report.errors == [], report
    on_src, on_dst = await pair.names()
    assert on_dst == [before[1][-1]] and before[1][-1] in on_src


async def test_an_unasked_target_keeps_every_possible_base(pair: Pair) -> None:
    """A second target of the policy does not answer: without a cursor for it (zfs-fuse,
    or OpenZFS before its first confirmed step) the primary destroys nothing."""

    async def down() -> ReplicaInfo:
        raise ZflockError("node c unreachable")

    r = rules("last=1", "last=1", targets=("b", "c"))
    for step in range(4):
        await pair.write_and_snapshot(T0 + step * STEP)
        await pair.sync()
        report = await pair.prune(r, T0 + step * STEP, others={"c": down})
    on_src, on_dst = await pair.names()
    assert len(on_src) == 4 and len(on_dst) == 1
    assert report.primary.destroyed == ()
    assert "c could not be asked" in report.primary.protected[on_src[0]]


async def test_no_policy_prunes_the_replica_only(pair: Pair) -> None:
    r = rules("last=1", "last=1", targets=None)
    for step in range(3):
        await pair.write_and_snapshot(T0 + step * STEP)
        await pair.sync()
        report = await pair.prune(r, T0 + step * STEP)
    on_src, on_dst = await pair.names()
    assert (len(on_src), len(on_dst)) == (3, 1)
    assert report.primary.skipped and "no replication policy" in report.primary.skipped


async def test_operator_snapshots_stay_on_both_sides(pair: Pair) -> None:
    await pair.write_and_snapshot(T0)
    await pair.src.zfs.snapshot(pair.vol, "before-upgrade")
    for step in range(1, 4):
        await pair.write_and_snapshot(T0 + step * STEP)
    await pair.sync()
    await pair.prune(rules("last=1", "last=1"), T0 + 3 * STEP)
    on_src, on_dst = await pair.names()
    assert "before-upgrade" in on_src and "before-upgrade" in on_dst
    assert len(on_src) == len(on_dst) == 2


# -- OpenZFS only: holds, the cursor bookmark, a stalled stream resumed -------------------


async def held(node: ZfsNode, dataset: str) -> list[str]:
    return await node.zfs.held(dataset, BASE_HOLD)


async def cursor(node: ZfsNode, dataset: str) -> str | None:
    """The snapshot (by GUID) that the cursor bookmark for "b" marks."""
    marks = {m.name: m.guid for m in await node.zfs.list_bookmarks(dataset)}
    guid = marks.get(cursor_name("b"))
    return next((s.name for s in await node.zfs.list_snapshots(dataset) if s.guid == guid), None)


async def test_base_hold_on_the_replica_moves_with_each_confirmed_step(pair: Pair) -> None:
    await need(pair.dst, "holds")
    r = rules("last=1", "last=2")
    first = await pair.write_and_snapshot(T0)
    await pair.sync()
    report = await pair.prune(r, T0)
    assert report.held == first and await held(pair.dst, pair.target) == [first]
    # Held: not even a plain `zfs destroy` takes the base away.
    with pytest.raises(DatasetBusy):
        await pair.dst.zfs.destroy_snapshot(pair.target, first)

    second = await pair.write_and_snapshot(T0 + STEP)
    await pair.sync()
    assert await held(pair.dst, pair.target) == [first]  # received, not yet confirmed
    await pair.prune(r, T0 + STEP)
    assert await held(pair.dst, pair.target) == [second]
    third = await pair.write_and_snapshot(T0 + 2 * STEP)
    await pair.sync()
    await pair.prune(r, T0 + 2 * STEP)
    # The old base was released and then pruned (last=2 keeps second and third).
    assert (await pair.names())[1] == [second, third]
    assert await held(pair.dst, pair.target) == [third]


async def test_cursor_bookmark_moves_only_after_the_receiver_confirmed(pair: Pair) -> None:
    await need(pair.src, "bookmarks")
    r = rules("last=1", "last=1")
    first = await pair.write_and_snapshot(T0)
    await pair.sync()
    report = await pair.prune(r, T0)
    assert report.cursor == first and await cursor(pair.src, pair.vol) == first

    # A snapshot the replica never received: pruning runs, the cursor stays put, and
    # the primary keeps the replica's base (the rule), so the next sync is incremental.
    second = await pair.write_and_snapshot(T0 + STEP)
    await pair.prune(r, T0 + STEP)
    assert await cursor(pair.src, pair.vol) == first
    assert (await pair.names())[0] == [first, second]
    assert await pair.sync() == ["incremental"]
    await pair.prune(r, T0 + STEP)
    assert await cursor(pair.src, pair.vol) == second
    assert await pair.names() == ([second], [second])

    # A second target that cannot be asked: everything from its cursor on stays.
    async def down() -> ReplicaInfo:
        raise ZflockError("node c unreachable")

    await pair.src.zfs.bookmark(f"{pair.vol}@{second}", cursor_name("c"))
    for step in range(2, 5):
        await pair.write_and_snapshot(T0 + step * STEP)
        await pair.sync()
        await pair.prune(rules("last=1", "last=1", ("b", "c")), T0 + step * STEP, {"c": down})
    on_src, _ = await pair.names()
    assert on_src[0] == second and len(on_src) == 4


async def test_stalled_stream_keeps_its_snapshots_and_is_resumed(pair: Pair) -> None:
    await need(pair.dst, "resume_tokens")
    r = rules("last=1", "last=1")
    base = await pair.write_and_snapshot(T0)
    await pair.sync()
    await pair.prune(r, T0)
    stalled = await pair.write_and_snapshot(T0 + STEP, size=2_000_000)
    stream = await send_bytes(pair.src, f"{pair.vol}@{stalled}", base=f"{pair.vol}@{base}")
    with pytest.raises(ZfsError):  # the connection drops half-way
        async with pair.dst.zfs.receive(pair.target, resumable=True) as recv:
            await recv.write(stream[: len(stream) // 2])
    assert await pair.dst.zfs.resume_token(pair.target)
    await pair.write_and_snapshot(T0 + 2 * STEP)

    # Pruning while the stream is stalled keeps its base and the snapshot it completes.
    report = await pair.prune(r, T0 + 2 * STEP)
    on_src, _ = await pair.names()
    assert base in on_src and stalled in on_src
    assert "resumable stream" in report.primary.protected[stalled]
    kinds = await pair.sync()
    assert kinds[0] == "resume", kinds
    assert await pair.dst.zfs.resume_token(pair.target) is None
    await pair.prune(r, T0 + 2 * STEP)
    on_src, on_dst = await pair.names()
    assert on_src == on_dst and len(on_src) == 1


async def test_a_prune_planned_from_a_remembered_listing_reads_the_primary_again(
    pair: Pair,
) -> None:
    """A scheduled run may start from the primary as the run before left it
    (agent/link_memory.py). If an operator destroyed a snapshot by hand since, a
    retention plan over that listing can pick the gone snapshot as its hour's keeper
    and destroy the one left: so a plan from a remembered listing that destroys
    anything is made again from the primary as it is, before anything goes."""
    for minutes in (0, 10, 20, 130):
        await pair.write_and_snapshot(T0 + timedelta(minutes=minutes))
        await pair.sync()
    now = T0 + timedelta(minutes=130)
    remembered = await pair.sender.source()
    first, second, third, newest = (s.name for s in remembered.snapshots)
    await pair.src.zfs.destroy_snapshot(pair.vol, first)  # by hand, behind zflock's back
    report = await prune_after_sync(
        pair.sender, pair.receiver, IDENTITY, rules("3x1h", "last=10"), peer="b",
        others={}, now=now, source=remembered, source_remembered=True,
    )  # fmt: skip
    assert report.errors == [], report
    # The 08:00 hour keeps one snapshot (the second, now its oldest), not none.
    assert (await pair.names())[0] == [second, third, newest]
