"""The move marker on the source and what recovery does with it (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.move.fencing import ABORTED, PROMOTED, SUPERSEDED, UNKNOWN
from zflock.move.marker import FENCED, PROMOTING, BadMarker, Marker, new_move_id, parse_marker
from zflock.move.recovery import (
    ASK_DESTINATION,
    COMPLETE,
    RETIRE,
    ROLL_BACK,
    STALE,
    UNREACHABLE,
    WAIT,
    Heard,
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
    ("marker", "role", "epoch", "answer", "seen", "action"),
    [
        # Never asked to promote: the source alone can undo it.
        (FENCED_M, "primary", 2, None, 0, ROLL_BACK),
        (FENCED_M, "primary", 2, UNREACHABLE, 0, ROLL_BACK),
        # ... unless some node holds a higher epoch: never writable below it.
        (FENCED_M, "primary", 2, None, 3, STALE),
        # A promote request may be out: only the destination knows.
        (PROMOTING_M, "primary", 2, None, 0, ASK_DESTINATION),
        (PROMOTING_M, "primary", 2, PROMOTED, 3, COMPLETE),
        (PROMOTING_M, "primary", 2, ABORTED, 2, ROLL_BACK),
        (PROMOTING_M, "primary", 2, ABORTED, 5, STALE),
        (PROMOTING_M, "primary", 2, SUPERSEDED, 4, STALE),
        (PROMOTING_M, "primary", 2, SUPERSEDED, 0, STALE),
        (PROMOTING_M, "primary", 2, UNREACHABLE, 0, WAIT),
        (PROMOTING_M, "primary", 2, UNKNOWN, 0, WAIT),
        (PROMOTING_M, "primary", 2, UNKNOWN, 2, WAIT),
        # The destination cannot answer, but a peer holds the move's epoch or more.
        (PROMOTING_M, "primary", 2, UNKNOWN, 3, STALE),
        (PROMOTING_M, "primary", 2, UNREACHABLE, 4, STALE),
        # The demotion had started: only the marker is left.
        (PROMOTING_M, "replica", 2, None, 0, COMPLETE),
        (FENCED_M, "replica", 2, None, 0, COMPLETE),
        # A marker at or below the copy's own epoch is history: retired, never acted on.
        (PROMOTING_M, "primary", 3, None, 0, RETIRE),
        (PROMOTING_M, "primary", 4, ABORTED, 0, RETIRE),
        (FENCED_M, "primary", 3, None, 0, RETIRE),
        (PROMOTING_M, "replica", 5, SUPERSEDED, 9, RETIRE),
    ],
)
def test_recovery_table(
    marker: Marker, role: str, epoch: int, answer: Heard | None, seen: int, action: str
) -> None:
    r = recover(marker, role, epoch, answer, seen)
    assert r.action == action and r.reason
    if action == STALE:
        assert r.lost_to > epoch


@given(
    st.sampled_from([FENCED_M, PROMOTING_M]),
    st.sampled_from(["primary", "replica"]),
    st.integers(1, 6),
    st.sampled_from([None, PROMOTED, ABORTED, SUPERSEDED, UNKNOWN, UNREACHABLE]),
    st.integers(0, 8),
)
def test_recovery_never_unfences_without_knowing(
    marker: Marker, role: str, epoch: int, answer: Heard | None, seen: int
) -> None:
    # Invariant 1: with a promote possibly delivered, rolling back needs ABORTED, and
    # never happens below an epoch seen anywhere or for a marker older than the copy.
    r = recover(marker, role, epoch, answer, seen)
    if r.action == ROLL_BACK:
        assert role == "primary" and seen <= epoch < marker.new_epoch
        assert marker.phase == FENCED or answer == ABORTED
