"""The ownership model on properties, and grouping copies into volumes (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from zflock.agent.volumes import next_sequence
from zflock.cli.views import group_volumes
from zflock.cluster.ownership import (
    NotManaged,
    Ownership,
    ownership_from_properties,
    ownership_properties,
)
from zflock.errors import UsageError
from zflock.rpc.messages import VolumeInfo
from zflock.units import format_age, format_bytes, parse_size

ID1 = "11111111-1111-4111-8111-111111111111"
ID2 = "22222222-2222-4222-8222-222222222222"
OWN = Ownership(volume="web", id=ID1, epoch=4, role="primary", origin="node1", seq=7)


def test_properties_round_trip() -> None:
    assert ownership_from_properties(ownership_properties(OWN)) == OWN


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"zflock:volume": None}, "zflock:volume"),
        ({"zflock:id": "nope"}, "UUID"),
        ({"zflock:role": "owner"}, "zflock:role"),
        ({"zflock:epoch": "x"}, "integer"),
        ({"zflock:epoch": "0"}, ">= 1"),
        ({"zflock:seq": "-1"}, ">= 0"),
    ],
)
def test_damaged_properties_are_not_ours(change: dict[str, str | None], expected: str) -> None:
    props: dict[str, str | None] = {**ownership_properties(OWN), **change}
    with pytest.raises(NotManaged, match=expected):
        ownership_from_properties(props)


def test_next_sequence_uses_names_when_counter_lags() -> None:
    names = ["zflock-20261125T100000Z-000009", "manual", "zflock-20261125T100001Z-000003"]
    assert next_sequence(OWN, names) == 10
    assert next_sequence(OWN, []) == 8


def copy(node: str, role: str, epoch: int, vid: str = ID1, name: str = "web") -> VolumeInfo:
    return VolumeInfo(
        name=name, node=node, id=vid, role=role, epoch=epoch, origin="node1",
        mountpoint=f"/zflock/{name}", mounted=role == "primary", readonly=role != "primary",
        used=0, referenced=0, quota=None, snapshots=1, latest_snapshot="s",
        latest_snapshot_time=1,
    )  # fmt: skip


def test_group_primary_and_replicas() -> None:
    [v] = group_volumes([copy("n2", "replica", 3), copy("n1", "primary", 3)])
    assert v.primary == "n1" and v.epoch == 3 and not v.problems
    assert [c.node for c in v.copies] == ["n1", "n2"]
    assert [r.node for r in v.replicas] == ["n2"]


def test_group_flags_two_primaries_and_stale_ones() -> None:
    [v] = group_volumes([copy("n1", "primary", 3), copy("n2", "primary", 3)])
    assert v.primary is None and "more than one primary" in v.problems[0]
    [v] = group_volumes([copy("n1", "primary", 2), copy("n2", "primary", 3)])
    assert v.primary == "n2" and "stale primary" in v.problems[0]
    [v] = group_volumes([copy("n1", "replica", 2)])
    assert v.primary is None and v.problems == ["no reachable primary"]


def test_same_name_different_ids_stay_apart() -> None:
    views = group_volumes([copy("n1", "primary", 1), copy("n2", "primary", 1, vid=ID2)])
    assert len(views) == 2
    assert all("another volume named web" in v.problems[0] for v in views)
    assert {v.primary for v in views} == {"n1", "n2"}


def test_group_does_not_mutate_input_order() -> None:
    items = [copy("n2", "replica", 1), copy("n1", "primary", 1)]
    before = [dataclasses.astuple(i) for i in items]
    group_volumes(items)
    assert [dataclasses.astuple(i) for i in items] == before


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("512M", 512 << 20), ("10G", 10 << 30), ("1.5k", 1536), ("2GiB", 2 << 30)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-1G", "10X", "G", "1;rm", "1e9"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


def test_formatting() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 << 30) == "3.0 GiB"
    assert [format_age(s) for s in (None, 5, 600, 7300, 200000)] == ["-", "5s", "10m", "2h", "2d"]
