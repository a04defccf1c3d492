"""The fencing rule: which copy may be writable, decided from epochs (pure).

**The rule.** A copy becomes or stays writable only if it is the primary
and its epoch is the highest the deciding agent can see for that volume id
(its own copy, what it wrote down about epochs it has lost to, and what the
peers it reached report). Every state-changing answer of a move -- promote,
resolve, demote, unfence -- is decided from (volume id, epoch, role, move id)
together, never from a move id alone.

What each side decides with it:

* **promote** (destination, `decide_promote`): only a *replica* of the same
  volume id, for a move it was not told to abandon, to an epoch above every
  epoch the copy has seen. A repeated promote for the move that already
  promoted this copy only finishes it while the copy is still that move's
  primary (its epoch not beyond the move's, its role not demoted since).
* **resolve** (destination, `decide_resolve`), the source asking "did move M
  promote you?":
  - `promoted`: this copy records `promoted-by=M/E` (E the move's epoch) and is
    still at or below E and not demoted since: the promotion is finished if it
    was cut short (unless the copy is fenced as the source of a later move of its
    own: that move decides whether it is writable);
  - `superseded`: the copy has seen the move's epoch or a later one, but is no
    longer (or never was) that move's primary: a later move won. The source
    must stay fenced for good, as a *stale* copy;
  - `aborted`: the copy has seen no epoch as high as the move's: the move did
    not promote here, and `aborted-move` (the last ABORTED_KEPT abandoned move
    ids) makes sure it never will;
  - `unknown`: no copy of this volume is visible here (absent, renamed, pool
    not imported yet, another volume in its place): nothing proves the move
    did not promote, so the source stays fenced and asks again.
* **recovery** (source, `zflock.move.recovery.recover`): unfence only after
  `aborted` (or when the promote was never sent) *and* no peer reports an
  epoch above the source's; a marker for an epoch at or below the copy's own
  is history and is retired; `superseded`, or a peer reporting an epoch at or
  above the move's while the destination cannot answer, leaves the source a
  stale copy (`zflock.cluster.ownership.Stale`).
* **demote** clears `promoted-by` (and even a demotion cut short before that
  is safe: a demoted copy's role is `replica`, which the checks above read).

`zflock:promoted-by` is written as `<move id>/<epoch>`; a bare `<move id>`
(written by zflock before epochs qualified it) is read with an unknown epoch
and is then trusted only together with the copy's own epoch and role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from zflock.cluster.ownership import ROLE_PRIMARY, ROLE_REPLICA

Answer = Literal["promoted", "aborted", "superseded", "unknown"]
PROMOTED: Final = "promoted"
ABORTED: Final = "aborted"
SUPERSEDED: Final = "superseded"
UNKNOWN: Final = "unknown"
ANSWERS: tuple[Answer, ...] = (PROMOTED, ABORTED, SUPERSEDED, UNKNOWN)

PromoteAction = Literal["promote", "finish", "refuse"]

# How many abandoned moves a copy remembers (`zflock:aborted-move`, newest first).
# One is not enough: a move retried after an abort promotes to the same epoch, so
# only the id tells a late request of the first attempt from the retry's.
ABORTED_KEPT = 32


def parse_aborted(value: str | None) -> tuple[str, ...]:
    if value is None or value in ("", "-"):
        return ()
    return tuple(v for v in value.split(",") if v)


def with_aborted(aborted: tuple[str, ...], move_id: str) -> str:
    """The new `zflock:aborted-move` value once `move_id` is abandoned too."""
    kept = [move_id, *(a for a in aborted if a != move_id)][:ABORTED_KEPT]
    return ",".join(kept)


def parse_answer(value: str) -> Answer:
    """A resolve answer off the wire; anything else is treated as `unknown` (stay fenced)."""
    for answer in ANSWERS:
        if value == answer:
            return answer
    return UNKNOWN


@dataclass(frozen=True)
class PromotedBy:
    """`zflock:promoted-by`: the move that promoted this copy, and to which epoch."""

    move_id: str
    epoch: int | None  # None: a bare move id, written before epochs qualified it

    def format(self) -> str:
        return f"{self.move_id}/{self.epoch}" if self.epoch is not None else self.move_id


def parse_promoted_by(value: str | None) -> PromotedBy | None:
    if value is None or value in ("", "-"):
        return None
    move_id, _, epoch = value.partition("/")
    return PromotedBy(move_id, int(epoch) if epoch.isdigit() else None)


@dataclass(frozen=True)
class CopyState:
    """One copy of a volume as the agent holding it sees it (plain data)."""

    volume_id: str
    epoch: int
    role: str  # ROLE_PRIMARY | ROLE_REPLICA
    promoted_by: PromotedBy | None = None
    aborted_moves: tuple[str, ...] = ()  # moves it was told to abandon, newest first
    lost_to: int = 0  # a stale copy: the epoch it lost to (0: not stale)
    moving_to: int = 0  # the new epoch of this copy's own move marker (0: none)

    @property
    def seen_epoch(self) -> int:
        """The highest epoch this copy knows of: its own, one it lost to, or the one its
        own move (as a source) is promoting another copy to."""
        by = self.promoted_by.epoch if self.promoted_by and self.promoted_by.epoch else 0
        return max(self.epoch, self.lost_to, by, self.moving_to)


@dataclass(frozen=True)
class MoveRef:
    """What every promote and resolve names: the volume, the move, the epoch it promotes to."""

    volume_id: str
    move_id: str
    epoch: int


@dataclass(frozen=True)
class Verdict:
    """A resolve decision: the answer, and what the destination does to its copy first."""

    answer: Answer
    reason: str
    finish: bool = False  # finish this move's promotion (it was cut short, or is repeated)
    abandon: bool = False  # write aborted-move: a late promote of this move is refused
    epoch: int = 0  # the highest epoch this copy has seen, told to the source


@dataclass(frozen=True)
class PromoteDecision:
    action: PromoteAction  # "promote" still needs the GUID check; "finish" repeats
    reason: str


def may_be_writable(role: str, epoch: int, seen: Iterable[int]) -> bool:
    """The rule itself: a primary whose epoch is the highest of every epoch seen."""
    return role == ROLE_PRIMARY and all(epoch >= e for e in seen)


def _promoted_this(copy: CopyState, move: MoveRef) -> bool:
    by = copy.promoted_by
    return by is not None and by.move_id == move.move_id and by.epoch in (None, move.epoch)


def _still_its_primary(copy: CopyState, move: MoveRef) -> bool:
    """Promoted by `move`, and nothing happened to it since: epoch and role still say so.
    Below the move's epoch: the promotion was cut short after its point of no return."""
    if copy.epoch < move.epoch:
        return True
    return copy.epoch == move.epoch and copy.role == ROLE_PRIMARY and copy.lost_to <= move.epoch


def decide_resolve(copy: CopyState | None, move: MoveRef) -> Verdict:
    """The destination's answer to "did `move` promote you?" (module docstring)."""
    if copy is None:
        return Verdict(
            UNKNOWN, "no copy of the volume is visible here: it may have promoted and be "
            "renamed, or its pool not imported yet",
        )  # fmt: skip
    if copy.volume_id != move.volume_id:
        return Verdict(UNKNOWN, f"the copy here is of another volume (id {copy.volume_id})")
    seen = copy.seen_epoch
    if _promoted_this(copy, move):
        if _still_its_primary(copy, move):
            # Still that move's primary -- but one fenced as the source of a later move
            # of its own is not made writable here: that move decides.
            later = copy.moving_to > move.epoch
            return Verdict(PROMOTED, "promoted by this move", finish=not later, epoch=move.epoch)
        return Verdict(
            SUPERSEDED, f"promoted by this move, but demoted or moved on since (epoch {seen})",
            epoch=seen,
        )  # fmt: skip
    if seen >= move.epoch:
        return Verdict(
            SUPERSEDED, f"the copy has seen epoch {seen}, at or above the move's {move.epoch}",
            epoch=seen,
        )  # fmt: skip
    return Verdict(
        ABORTED, f"not promoted by this move (epoch {copy.epoch}); it never will be",
        abandon=True, epoch=seen,
    )  # fmt: skip


def decide_promote(copy: CopyState | None, move: MoveRef) -> PromoteDecision:
    """May the destination promote its copy for `move`? (the GUID is checked by the caller)."""
    if copy is None:
        return PromoteDecision("refuse", "the dataset does not exist")
    if copy.volume_id != move.volume_id:
        return PromoteDecision("refuse", f"it is a copy of another volume (id {copy.volume_id})")
    if _promoted_this(copy, move):
        if copy.moving_to > move.epoch:
            return PromoteDecision("refuse", "it is fenced as the source of a later move")
        if _still_its_primary(copy, move):
            return PromoteDecision("finish", "already promoted by this move")
        return PromoteDecision(
            "refuse", f"this move promoted it once, but it has moved on (epoch {copy.epoch})"
        )
    if move.move_id in copy.aborted_moves:
        return PromoteDecision("refuse", f"move {move.move_id} was abandoned; it can no longer "
                               "promote")  # fmt: skip
    if copy.role != ROLE_REPLICA:
        return PromoteDecision("refuse", f"it is a {copy.role}, not a replica")
    if copy.seen_epoch >= move.epoch:
        # Fencing: never make writable a copy that has seen this epoch already.
        return PromoteDecision(
            "refuse", f"it has seen epoch {copy.seen_epoch}; refusing to promote it to epoch "
            f"{move.epoch}",
        )  # fmt: skip
    return PromoteDecision("promote", "a replica below the move's epoch")
