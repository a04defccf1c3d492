"""Pruning decisions over generated histories (pure): what a receiver admits, what a
primary keeps for a replica it cannot ask, and whole timelines of syncs and prunes on
an injected clock in which no replica ever loses its newest common snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zflock.replication.history import diff
from zflock.replication.model import SnapRef
from zflock.replication.naming import is_own, snapshot_name
from zflock.replication.retention import (
    KeepRules,
    PeerHistory,
    PruneRefused,
    admit_prune,
    parse_keep,
    plan_retention,
    protect_unasked,
)

T0 = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)


def own(i: int, minutes: int | None = None) -> SnapRef:
    when = T0 + timedelta(minutes=i if minutes is None else minutes)
    return SnapRef(snapshot_name(when, i), guid=1000 + i, order=10 * i)


# -- examples -----------------------------------------------------------------------


def test_protect_unasked_keeps_everything_without_a_cursor_and_from_it_with_one() -> None:
    snaps = [own(i) for i in range(5)]
    assert set(protect_unasked(snaps, "node3", None)) == {s.guid for s in snaps}
    kept = protect_unasked(snaps, "node3", cursor=snaps[2].order)
    assert set(kept) == {s.guid for s in snaps[2:]}
    assert "node3 could not be asked" in kept[snaps[2].guid]


def test_admit_prune_names_the_first_refused_snapshot_and_why() -> None:
    replica = [own(i) for i in range(5)] + [SnapRef("op", 66, 15), SnapRef("mine", 77, 999)]
    primary = [own(2), own(6)]  # the newest common snapshot is own(2)
    decision = plan_retention(replica, parse_keep("last=1"), T0 + timedelta(days=1),
                              [PeerHistory("node1", primary)])  # fmt: skip
    admit_prune(decision, [own(0), own(1)], replica, "node2:tank/v")  # allowed
    cases = [
        (own(2), "the newest common snapshot with node1"),
        (SnapRef("mine", 77, 999), "the newest snapshot"),
        (SnapRef("op", 66, 15), "zflock did not take it"),
        (SnapRef("gone", 55, 1), "it has no such snapshot"),
    ]
    for ref, why in cases:
        with pytest.raises(PruneRefused, match=why) as caught:
            admit_prune(decision, [own(0), ref], replica, "node2:tank/v")
        assert str(caught.value).startswith(f"refusing to prune node2:tank/v@{ref.name}")
    keeps = plan_retention(replica, parse_keep("last=4"), T0 + timedelta(days=1))
    with pytest.raises(PruneRefused, match="its keep rules keep it"):
        admit_prune(keeps, [own(3)], replica, "node2:tank/v")


# -- properties -----------------------------------------------------------------------

harsh_rules = st.sampled_from(
    ["last=1", "last=2", "1x20m", "1x10m(keep=all) | 2x30m", "2x1h(keep=2), last=1", "1x1d"]
).map(parse_keep)


@st.composite
def replica_and_request(draw: st.DrawFn) -> tuple[list[SnapRef], list[SnapRef], list[SnapRef]]:
    n = draw(st.integers(1, 12))
    history = [own(i, draw(st.integers(0, 600))) for i in range(n)]
    history.sort(key=lambda s: s.order)
    replica = [s for s in history if draw(st.booleans())] or history[-1:]
    if draw(st.booleans()):
        replica.append(SnapRef("operator", 9999, 10_000))  # its own, after what it received
    primary = [s for s in history if draw(st.booleans())]
    request = draw(st.lists(st.sampled_from(replica), unique=True))
    return replica, primary, request


@given(replica_and_request(), harsh_rules, st.integers(0, 2000))
def test_an_admitted_request_never_takes_the_base_the_newest_or_a_foreign_snapshot(
    case: tuple[list[SnapRef], list[SnapRef], list[SnapRef]], rules: KeepRules, at: int
) -> None:
    replica, primary, request = case
    now = T0 + timedelta(minutes=at)
    decision = plan_retention(replica, rules, now, [PeerHistory("node1", primary)])
    try:
        admit_prune(decision, request, replica, "r")
    except PruneRefused:
        assert not {s.guid for s in request} <= {s.guid for s in decision.destroy}
        return
    remaining = [s for s in replica if s not in request]
    assert replica[-1] in remaining
    assert all(is_own(s.name) for s in request)
    assert diff(primary, remaining).destination_base == diff(primary, replica).destination_base


@st.composite
def timelines(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Steps of one primary and two replicas: a snapshot, a sync of one replica (or a
    failed one), each on a ten-minute tick of the injected clock."""
    actions = st.sampled_from(["sync2", "sync3", "sync2", "fail3", "snapshot"])
    return [(draw(actions), draw(st.integers(1, 90))) for _ in range(draw(st.integers(1, 40)))]


@settings(max_examples=150, deadline=None)
@given(timelines(), harsh_rules, harsh_rules, st.booleans())
def test_no_timeline_ever_prunes_a_replicas_newest_common_snapshot(
    steps: list[tuple[str, int]], keep: KeepRules, keep_replica: KeepRules, cursors: bool
) -> None:
    """After every sync both sides are pruned as prune_after_sync does: the synced
    replica first (its own decision, the primary as its peer), then the primary with
    the synced replica as it reported itself and the other as it answers, or, when it
    cannot be asked, protected by protect_unasked from its cursor (OpenZFS) or whole."""
    primary: list[SnapRef] = []
    replicas: dict[str, list[SnapRef]] = {"node2": [], "node3": []}
    cursor: dict[str, int] = {}
    minutes, seq = 0, 0
    for action, advance in steps:
        minutes += advance
        now = T0 + timedelta(minutes=minutes)
        primary.append(SnapRef(snapshot_name(now, seq), guid=seq, order=seq))
        seq += 1
        if action == "snapshot":
            continue
        peer = "node2" if action == "sync2" else "node3"
        other = "node3" if peer == "node2" else "node2"
        reachable = action != "fail3"
        bases = {n: diff(primary, r).source_base for n, r in replicas.items()}
        if reachable:
            base = bases[peer]
            start = primary.index(base) + 1 if base else 0
            replicas[peer] = replicas[peer] + primary[start:]
            back = plan_retention(replicas[peer], keep_replica, now, [PeerHistory("n1", primary)])
            replicas[peer] = [s for s in replicas[peer] if s not in back.destroy]
            confirmed = diff(primary, replicas[peer]).source_base
            if cursors and confirmed is not None:
                cursor[peer] = confirmed.order
        # node3 is the one that fails: when it does, it can be asked neither for the
        # sync nor before the primary prunes; the other replica answers.
        asked = [PeerHistory(peer, replicas[peer])] if reachable else []
        protect: dict[int, str] = (
            {} if reachable else protect_unasked(primary, peer, cursor.get(peer))
        )
        asked.append(PeerHistory(other, replicas[other]))  # it answers
        gone = plan_retention(primary, keep, now, asked, protect.keys()).destroy
        primary = [s for s in primary if s not in gone]
        for node, replica in replicas.items():
            before, after = bases[node], diff(primary, replica).source_base
            if node == peer and reachable:
                assert after is not None  # it just synced: its base is the newest
            elif before is not None:
                assert after == before, (node, action)  # never lost, never moved back
        for node, replica in replicas.items():
            if replica:
                assert diff(primary, replica).source_base is not None, node
