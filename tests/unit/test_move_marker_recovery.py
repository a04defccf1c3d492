"""The move marker on the source and what recovery does with it (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.move.marker import FENCED, PROMOTING, BadMarker, Marker, new_move_id, parse_marker
from zflock.move.recovery import (
    ABORTED,
    ASK_DESTINATION,
    COMPLETE,
    PROMOTED,
    ROLL_BACK,
    UNREACHABLE,
    WAIT,
    recover,
)

MOVE = "0123456789abcdef"


def test_marker_round_trips() -> None:
    m = Marker(FENCED, MOVE, "node2", 7)
    assert m.format() == f"fenced/{MOVE}/node2/7"
    assert parse_marker(m.format()) == m
    assert parse_marker(m.at(PROMOTING).format()) == Marker(PROMOTING, MOVE, "node2", 7)


@pytest.mark.parametrize("unset", [None, "", "-"])
def test_no_marker_means_no_move(unset: str | None) -> None:
    assert parse_marker(unset) is None


@pytest.mark.parametrize(
    "value",
    [
        "fenced",
        f"fenced/{MOVE}/node2",
        f"paused/{MOVE}/node2/3",
        "fenced/XYZ/node2/3",
        f"fenced/{MOVE}/node 2/3",
        f"fenced/{MOVE}/-node/3",
        f"fenced/{MOVE}/node2/1",
        f"fenced/{MOVE}/node2/x",
        f"fenced/{MOVE}/node2/3/extra",
    ],
)
def test_damaged_markers_are_refused(value: str) -> None:
    with pytest.raises(BadMarker):
        parse_marker(value)


@given(st.sampled_from([FENCED, PROMOTING]), st.integers(2, 10**9))
def test_generated_markers_round_trip(phase: str, epoch: int) -> None:
    m = Marker(phase, new_move_id(), "node-7.a_b", epoch)
    assert parse_marker(m.format()) == m


FENCED_M = Marker(FENCED, MOVE, "node2", 3)
PROMOTING_M = Marker(PROMOTING, MOVE, "node2", 3)


@pytest.mark.parametrize(
    ("marker", "role", "answer", "action"),
    [
        # Never asked to promote: the source alone can undo it.
        (FENCED_M, "primary", None, ROLL_BACK),
        (FENCED_M, "primary", UNREACHABLE, ROLL_BACK),
        # A promote request may be out: only the destination knows.
        (PROMOTING_M, "primary", None, ASK_DESTINATION),
        (PROMOTING_M, "primary", PROMOTED, COMPLETE),
        (PROMOTING_M, "primary", ABORTED, ROLL_BACK),
        (PROMOTING_M, "primary", UNREACHABLE, WAIT),
        # The demotion had started: only the marker is left.
        (PROMOTING_M, "replica", None, COMPLETE),
        (FENCED_M, "replica", None, COMPLETE),
    ],
)
def test_recovery_table(marker: Marker, role: str, answer: str | None, action: str) -> None:
    r = recover(marker, role, answer)
    assert r.action == action and r.reason


def test_recovery_never_unfences_without_knowing() -> None:
    # Invariant 1: with a promote possibly delivered, rolling back needs ABORTED.
    for answer in (None, UNREACHABLE):
        assert recover(PROMOTING_M, "primary", answer).action != ROLL_BACK
