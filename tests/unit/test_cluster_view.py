"""The cluster view (zflock/cluster/view.py): examples and properties over any answers."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from zflock.cluster.view import Copy, VolumeView, cluster_view, views_named

NODES = ["node1", "node2", "node3", "node4"]
IDS = ["id-a", "id-b", "id-c"]


def copy(node: str, role: str = "replica", epoch: int = 1, **kw: object) -> Copy:
    fields: dict[str, object] = {"name": "web", "id": "id-a", "stale": None, **kw}
    return Copy(node=node, role=role, epoch=epoch, **fields)  # type: ignore[arg-type]


def test_primary_replicas_and_stale_copies() -> None:
    [v] = cluster_view(
        [
            copy("node3", "replica", 3),
            copy("node1", "primary", 2),
            copy("node2", "primary", 3),
            copy("node4", "replica", 2, stale="3/superseded/m1"),
        ],
        unreachable=["node5"],
    )
    assert v.primary == "node2" and v.epoch == 3 and v.seen_epoch == 3
    assert v.copies[0].node == "node2"
    assert v.stale_nodes == ["node1", "node4"] and v.unreachable == ["node5"]
    assert [v.status(n) for n in ("node1", "node2", "node3", "node4", "node5")] == [
        "stale", "primary", "replica", "stale", None,
    ]  # fmt: skip
    assert "stale primary at a lower epoch on node1" in v.problems
    assert any(p.startswith("node4 holds a stale: lost to epoch 3") for p in v.problems)


def test_no_reachable_primary_names_the_unreachable_nodes() -> None:
    [v] = cluster_view([copy("node2"), copy("node3")], unreachable=["node1"])
    assert v.primary is None and v.problems == ["no reachable primary (unreachable: node1)"]
    [v] = cluster_view([copy("node2")])
    assert v.problems == ["no reachable primary"]


def test_seen_epoch_counts_what_a_stale_copy_lost_to() -> None:
    [v] = cluster_view([copy("node2", epoch=2), copy("node1", stale="7/higher-epoch/m")])
    assert v.epoch == 2 and v.seen_epoch == 7


def test_a_stale_label_is_never_the_primary() -> None:
    [v] = cluster_view([copy("node1", "primary", 3, stale="garbage")])
    assert v.primary is None and v.status("node1") == "stale"


def test_a_self_fenced_primary_is_still_the_primary_and_named() -> None:
    [v] = cluster_view([copy("node1", "primary", 3, fenced="no-majority/1"), copy("node2")])
    assert v.primary == "node1" and v.fenced_nodes == ["node1"] and v.status("node1") == "primary"


def test_two_primaries_at_the_top_epoch_give_none() -> None:
    [v] = cluster_view([copy("node1", "primary", 3), copy("node2", "primary", 3)])
    assert v.primary is None and v.status("node1") == "unclear"
    assert v.problems[0] == "more than one primary at epoch 3: node1, node2"


def test_a_name_clash_is_two_volumes() -> None:
    views = cluster_view([copy("node1", "primary"), copy("node2", "primary", id="id-b")])
    assert [v.id for v in views] == ["id-a", "id-b"]
    assert all("another volume named web exists" in v.problems[-1] for v in views)
    assert len(views_named(views, "web")) == 2 and views_named(views, "db") == []


copies_st = st.lists(
    st.builds(
        Copy,
        name=st.sampled_from(["web", "db"]),
        node=st.sampled_from(NODES),
        id=st.sampled_from(IDS),
        role=st.sampled_from(["primary", "replica"]),
        epoch=st.integers(1, 6),
        stale=st.one_of(
            st.none(), st.builds("{}/superseded/m".format, st.integers(1, 8)), st.just("bad")
        ),
    ),
    max_size=10,
    unique_by=lambda c: (c.node, c.id),  # a node holds one copy of a volume
)


def _by_id(views: list[VolumeView[Copy]]) -> dict[str, VolumeView[Copy]]:
    return {v.id: v for v in views}


@given(copies_st, st.lists(st.sampled_from(["node5", "node6"])))
def test_the_rule_holds_for_any_answers(copies: list[Copy], down: list[str]) -> None:
    views = cluster_view(copies, down)
    # Every copy is in exactly one view, that of its id; one view per id.
    assert sorted(map(dataclasses.astuple, (c for v in views for c in v.copies))) == sorted(
        map(dataclasses.astuple, copies)
    )
    assert len(views) == len({c.id for c in copies})
    for v in views:
        assert all(c.id == v.id for c in v.copies)
        assert v.epoch == max(c.epoch for c in v.copies) <= v.seen_epoch
        assert v.unreachable == sorted(set(down))
        if v.primary is None:
            assert any("primary" in p for p in v.problems)
            continue
        # The primary: the only non-stale copy marked primary at the highest epoch.
        p = v.primary_copy
        assert p is not None and v.copies[0] is p
        assert p.role == "primary" and p.epoch == v.epoch and p.stale is None
        rivals = [
            c for c in v.copies if c.role == "primary" and c.epoch == v.epoch and c.stale is None
        ]
        assert rivals == [p]
        assert v.primary not in v.stale_nodes and p not in v.replicas
        # Nothing the rule calls stale or replica is writable by its say.
        for c in v.copies:
            assert v.status(c.node) in ("primary", "replica", "stale", "unclear")
            if c.stale is not None or (c.role == "primary" and c.epoch < v.epoch):
                assert v.status(c.node) == "stale"


@given(copies_st, st.randoms())
def test_the_order_of_answers_does_not_matter(copies: list[Copy], rnd: object) -> None:
    shuffled = list(copies)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    key = [(v.id, v.primary, v.epoch, v.seen_epoch, v.stale_nodes) for v in cluster_view(copies)]
    assert key == [
        (v.id, v.primary, v.epoch, v.seen_epoch, v.stale_nodes) for v in cluster_view(shuffled)
    ]
    assert [dataclasses.astuple(c) for c in shuffled] != [] or copies == []
