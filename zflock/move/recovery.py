"""What to do with a move found interrupted (pure).

Called when an agent starts and when `zflock move` finds a move marker on a
copy. The marker's phase says whether the destination can have promoted
itself; only in `promoting` does the source need the destination's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from zflock.move.marker import FENCED, PROMOTING, Marker

ROLL_BACK = "roll back"  # make the source writable again, run the rollback hooks
COMPLETE = "complete"  # the destination is the primary: demote the source
ASK_DESTINATION = "ask destination"  # settle the move with the destination first
WAIT = "wait"  # cannot know: stay fenced, try again later

PROMOTED = "promoted"
ABORTED = "aborted"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Recovery:
    action: str
    reason: str


def recover(marker: Marker, source_role: str, destination: str | None = None) -> Recovery:
    """`destination` is the destination's answer to resolve_move (PROMOTED / ABORTED /
    UNREACHABLE), or None when it was not asked yet."""
    if source_role != "primary":
        # The demotion got as far as the role: only the marker is left to clear.
        return Recovery(COMPLETE, "the source is already a replica")
    if marker.phase == FENCED:
        # The promote request is sent only after the marker says `promoting`,
        # so the destination cannot have become writable for this move.
        return Recovery(ROLL_BACK, "interrupted before the destination was asked to promote")
    assert marker.phase == PROMOTING
    if destination is None:
        return Recovery(ASK_DESTINATION, "a promote request may have reached the destination")
    if destination == PROMOTED:
        return Recovery(
            COMPLETE, f"{marker.destination} promoted itself (epoch {marker.new_epoch})"
        )
    if destination == ABORTED:
        return Recovery(ROLL_BACK, f"{marker.destination} did not promote and now never will")
    return Recovery(
        WAIT,
        f"{marker.destination} cannot be asked whether it promoted; the source stays "
        "read-only until it can (never two writable copies)",
    )
