"""The ownership model, stored on each copy of a volume as ZFS user properties.

The truth about a volume lives on the volume (docs/design.md: "State lives in
ZFS"), so an agent restart or a lost CLI never loses it and `zfs get all`
shows it to an operator:

    zflock:volume   the volume's name (the dataset's last component)
    zflock:id       a random UUID fixed at creation: two volumes that happen to
                    share a name are never mistaken for copies of each other
    zflock:epoch    raised by every change of primary; a copy whose epoch is
                    lower than one seen elsewhere must never become writable
    zflock:role     "primary" (the one writable, mounted copy) or "replica"
    zflock:origin   the node that created the volume
    zflock:seq      the sequence number of the newest snapshot zflock took
    zflock:stale    set on a *stale* copy: a former primary that lost a move to a
                    higher epoch without handing over cleanly (`Stale`)

Everything here is pure: property dicts in, dataclasses out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

PROP_VOLUME = "zflock:volume"
PROP_ID = "zflock:id"
PROP_EPOCH = "zflock:epoch"
PROP_ROLE = "zflock:role"
PROP_ORIGIN = "zflock:origin"
PROP_SEQ = "zflock:seq"
ZFLOCK_PROPERTIES = (PROP_VOLUME, PROP_ID, PROP_EPOCH, PROP_ROLE, PROP_ORIGIN, PROP_SEQ)

ROLE_PRIMARY = "primary"
ROLE_REPLICA = "replica"
ROLES = (ROLE_PRIMARY, ROLE_REPLICA)

PROP_STALE = "zflock:stale"
# failed-over: a primary cut off while a failover promoted another copy (docs/failover.md).
StaleReason = Literal["superseded", "higher-epoch", "failed-over", "unreadable"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Ownership:
    volume: str
    id: str
    epoch: int
    role: str
    origin: str
    seq: int

    @property
    def is_primary(self) -> bool:
        return self.role == ROLE_PRIMARY


class NotManaged(ValueError):
    """The dataset's properties do not describe a zflock volume (or are damaged)."""


def ownership_from_properties(props: Mapping[str, str | None]) -> Ownership:
    """Read a copy's ownership, refusing anything incomplete or malformed.

    A dataset with damaged zflock properties is treated as not ours: zflock
    must not act on a copy whose epoch or role it cannot read.
    """
    volume = props.get(PROP_VOLUME)
    if not volume:
        raise NotManaged("no zflock:volume property")
    vid = props.get(PROP_ID) or ""
    if not _UUID.fullmatch(vid):
        raise NotManaged(f"zflock:id {vid!r} is not a UUID")
    role = props.get(PROP_ROLE) or ""
    if role not in ROLES:
        raise NotManaged(f"zflock:role {role!r} is not one of {', '.join(ROLES)}")
    try:
        epoch = int(props.get(PROP_EPOCH) or "")
        seq = int(props.get(PROP_SEQ) or "0")
    except ValueError:
        raise NotManaged("zflock:epoch or zflock:seq is not an integer") from None
    if epoch < 1 or seq < 0:
        raise NotManaged("zflock:epoch must be >= 1 and zflock:seq >= 0")
    return Ownership(
        volume=volume, id=vid, epoch=epoch, role=role, origin=props.get(PROP_ORIGIN) or "", seq=seq
    )


def ownership_properties(o: Ownership) -> dict[str, str]:
    return {
        PROP_VOLUME: o.volume,
        PROP_ID: o.id,
        PROP_EPOCH: str(o.epoch),
        PROP_ROLE: o.role,
        PROP_ORIGIN: o.origin,
        PROP_SEQ: str(o.seq),
    }


@dataclass(frozen=True)
class Stale:
    """A stale copy: the source of a move that lost to a higher epoch (docs/move.md).

    It is a read-only, unmounted replica (role `replica`) that zflock never makes
    writable again on its own: not re-promoted by a late answer, no rollback hooks.
    Stored as `zflock:stale=<epoch>/<reason>/<move id>`. The label stays until a later
    move promotes the copy (it then holds the newest data) or it is destroyed.
    """

    epoch: int  # the epoch it lost to (the highest its agent saw)
    reason: StaleReason  # superseded: the destination said so; higher-epoch: a peer
    move_id: str  # the move this copy was the source of

    def format(self) -> str:
        return f"{self.epoch}/{self.reason}/{self.move_id}"

    def describe(self) -> str:
        why = {
            "superseded": "a later move superseded its move",
            "higher-epoch": "another node reports a higher epoch",
            "failed-over": "another copy was promoted while this one was cut off; "
            "its writes since are in its zflock-diverged snapshot",
            "unreadable": "its zflock:stale value is damaged",
        }[self.reason]
        move = f"; move {self.move_id}" if self.move_id else ""
        return f"stale: lost to epoch {self.epoch} ({why}{move})"


def parse_stale(value: str | None) -> Stale | None:
    """None for a copy that is not stale; a damaged value still reads as stale (never
    writable on a guess)."""
    if value is None or value in ("", "-"):
        return None
    epoch, _, rest = value.partition("/")
    reason, _, move_id = rest.partition("/")
    for known in ("superseded", "higher-epoch", "failed-over"):
        if epoch.isdigit() and reason == known:
            return Stale(int(epoch), known, move_id)
    return Stale(0, "unreadable", "")
