"""The move marker: what a source writes on its own dataset during a cutover (pure).

The truth about a move in progress must survive a crash of the agent, so it
lives on the volume as the user property `zflock:move`:

    fenced/<move id>/<destination>/<new epoch>      the source is read-only; the
                                                    destination was NOT asked to
                                                    promote yet
    promoting/<move id>/<destination>/<new epoch>   a promote request may have
                                                    reached the destination

The destination writes two properties of its own:

    zflock:promoted-by = <move id>/<epoch>  written first when it promotes itself:
                                     the move's point of no return; cleared when
                                     the copy is demoted
    zflock:aborted-move = <id>,<id>  the moves it was asked to settle and did not
                                     promote (newest first, the last 32): from then
                                     on a (late) promote for them is refused

The fencing rule (zflock.move.fencing) reads them together with the copy's
epoch and role, never alone.

See docs/move.md for how each state is recovered.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PROP_MOVE = "zflock:move"
PROP_PROMOTED_BY = "zflock:promoted-by"
PROP_ABORTED_MOVE = "zflock:aborted-move"
MOVE_PROPERTIES = (PROP_MOVE, PROP_PROMOTED_BY, PROP_ABORTED_MOVE)

FENCED = "fenced"
PROMOTING = "promoting"
PHASES = (FENCED, PROMOTING)

_MOVE_ID = re.compile(r"[0-9a-f]{16}")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class BadMarker(ValueError):
    """A `zflock:move` value zflock did not write (or a damaged one)."""


def new_move_id() -> str:
    return secrets.token_hex(8)


def valid_move_id(value: str | None) -> bool:
    return value is not None and _MOVE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Marker:
    phase: str
    move_id: str
    destination: str
    new_epoch: int

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise BadMarker(f"unknown move phase {self.phase!r}")
        if not valid_move_id(self.move_id):
            raise BadMarker(f"bad move id {self.move_id!r}")
        if not _NODE.fullmatch(self.destination):
            raise BadMarker(f"bad destination {self.destination!r}")
        if self.new_epoch < 2:
            raise BadMarker(f"bad epoch {self.new_epoch}")

    def format(self) -> str:
        return f"{self.phase}/{self.move_id}/{self.destination}/{self.new_epoch}"

    def at(self, phase: str) -> Marker:
        return Marker(phase, self.move_id, self.destination, self.new_epoch)


def parse_marker(value: str | None) -> Marker | None:
    """None when no move is in progress (property unset or '-'); BadMarker if damaged."""
    if value is None or value in ("", "-"):
        return None
    parts = value.split("/")
    if len(parts) != 4 or not parts[3].isdigit():
        raise BadMarker(f"unreadable zflock:move value {value!r}")
    return Marker(parts[0], parts[1], parts[2], int(parts[3]))
