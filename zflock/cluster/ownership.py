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

Everything here is pure: property dicts in, dataclasses out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

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
