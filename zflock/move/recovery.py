"""What to do with a move found interrupted on its source (pure).

Called when an agent starts, when `zflock move` finds a move marker on a
copy, and when a move could not learn the outcome of its promote request.
The decision follows the fencing rule (zflock.move.fencing): the marker's
epoch is compared with the copy's own first (a marker at or below the
copy's epoch belongs to a move that is over: it is retired, not acted on);
the source is made writable again only when the destination cannot have
promoted, or has said it never will, *and* no epoch above the source's
has been seen anywhere; a source that lost to a higher epoch stays fenced
for good as a stale copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from zflock.cluster.ownership import ROLE_PRIMARY
from zflock.move.fencing import ABORTED, PROMOTED, SUPERSEDED, Answer
from zflock.move.marker import FENCED, PROMOTING, Marker

Action = Literal["roll back", "complete", "ask destination", "wait", "retire", "stale"]
ROLL_BACK: Final = "roll back"  # make the source writable again, run the rollback hooks
COMPLETE: Final = "complete"  # the destination is the primary: demote the source
ASK_DESTINATION: Final = "ask destination"  # settle the move with the destination first
WAIT: Final = "wait"  # cannot know: stay fenced, try again later
RETIRE: Final = "retire"  # the marker is older than the copy: clear it, change nothing else
STALE: Final = "stale"  # a higher epoch won: stay fenced for good, as a stale copy

# The destination's answer as the source heard it: one of fencing.Answer, or no answer.
UNREACHABLE: Final = "unreachable"
Heard = Answer | Literal["unreachable"]


@dataclass(frozen=True)
class Recovery:
    action: Action
    reason: str
    lost_to: int = 0  # STALE: the epoch the source lost to
    superseded: bool = False  # STALE: the destination said so (else a peer's epoch did)


def recover(
    marker: Marker, role: str, epoch: int, answer: Heard | None = None, seen: int = 0
) -> Recovery:
    """`role` and `epoch` are the source copy's own; `answer` the destination's answer to
    resolve_move (None when it was not asked yet); `seen` the highest epoch reported by
    the destination's answer and by the peers that could be asked (0: none)."""
    if epoch >= marker.new_epoch:
        # Promoted again since (by a later move): this move is history.
        return Recovery(
            RETIRE, f"the copy is at epoch {epoch}, at or past the move's {marker.new_epoch}: "
            "the marker is retired",
        )  # fmt: skip
    if role != ROLE_PRIMARY:
        # The demotion got as far as the role: only the marker is left to clear.
        return Recovery(COMPLETE, "the source is already a replica")
    if answer == PROMOTED:
        return Recovery(
            COMPLETE, f"{marker.destination} promoted itself (epoch {marker.new_epoch})"
        )
    if answer == SUPERSEDED:
        lost_to = max(seen, marker.new_epoch)
        return Recovery(
            STALE, f"{marker.destination} has moved on to epoch {lost_to}: a later move won; "
            "the source stays read-only as a stale copy",
            lost_to=lost_to, superseded=True,
        )  # fmt: skip
    if seen > epoch:
        # The rule: never writable below an epoch seen anywhere. Whatever the
        # destination answered, some copy is ahead of this one.
        return Recovery(
            STALE, f"a copy at epoch {seen} exists, above this copy's {epoch}: the source "
            "stays read-only as a stale copy",
            lost_to=seen,
        )  # fmt: skip
    if marker.phase == FENCED:
        # The promote request is sent only after the marker says `promoting`,
        # so the destination cannot have become writable for this move.
        return Recovery(ROLL_BACK, "interrupted before the destination was asked to promote")
    assert marker.phase == PROMOTING
    if answer is None:
        return Recovery(ASK_DESTINATION, "a promote request may have reached the destination")
    if answer == ABORTED:
        return Recovery(ROLL_BACK, f"{marker.destination} did not promote and now never will")
    why = "cannot be asked" if answer == UNREACHABLE else "cannot tell (its copy is not visible)"
    return Recovery(
        WAIT,
        f"{marker.destination} {why} whether it promoted; the source stays read-only until "
        "it can (never two writable copies)",
    )
