"""Names of the snapshots zflock takes (pure).

zflock must tell its own snapshots from an operator's, because it only ever
prunes its own. So every snapshot it takes has one fixed shape:

    zflock-20261125T174500Z-000042
    ^prefix ^UTC timestamp   ^sequence number

The timestamp makes a name readable in `zfs list`; the sequence number makes
names unique and ordered even when two snapshots fall in the same second
(zfs-fuse has one-second `creation`) or the clock steps backwards. Ordering
for replication still comes from `createtxg` / listing order, never from the
name: the name only answers "is this ours?".

Every character is in ZFS's allowed set for a snapshot component
([A-Za-z0-9_.:-]), and the name never starts with "-".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

SNAPSHOT_PREFIX = "zflock-"

# Six digits sort and read well; a longer number is still accepted (never
# truncated) so the sequence can grow past 999999 without breaking parsing.
_SEQ_WIDTH = 6
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_OWN_RE = re.compile(r"(?P<ts>\d{8}T\d{6}Z)-(?P<seq>\d{6,})")


def _short(name: str) -> str:
    """The part after '@' of a full snapshot name; the name itself otherwise."""
    return name.rpartition("@")[2]


def snapshot_name(now: datetime, seq: int, prefix: str = SNAPSHOT_PREFIX) -> str:
    """The short name (after '@') of the snapshot zflock takes at `now`.

    `now` must be timezone-aware (it is converted to UTC): a naive datetime
    would silently take the host's local zone, and names from two hosts would
    then disagree about time.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("snapshot_name needs a timezone-aware datetime, got a naive one")
    if seq < 0:
        raise ValueError(f"snapshot sequence number must be >= 0, got {seq}")
    stamp = now.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{prefix}{stamp}-{seq:0{_SEQ_WIDTH}d}"


def parse_snapshot_name(name: str, prefix: str = SNAPSHOT_PREFIX) -> tuple[datetime, int] | None:
    """(UTC timestamp, sequence) of a zflock snapshot name, None if not ours.

    Accepts a short name or a full `pool/vol@name`. A name that merely
    starts with the prefix (say an operator's `zflock-before-upgrade`) is
    not ours: the whole shape must match, with a real calendar time.
    """
    short = _short(name)
    if not short.startswith(prefix):
        return None
    match = _OWN_RE.fullmatch(short, len(prefix))
    if match is None:
        return None
    try:
        when = datetime.strptime(match["ts"], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: the right shape, but not a time we wrote
        return None
    return when, int(match["seq"])


def is_own(name: str, prefix: str = SNAPSHOT_PREFIX) -> bool:
    """Whether zflock took this snapshot (and so may prune it)."""
    return parse_snapshot_name(name, prefix) is not None


def next_sequence(names: Iterable[str], prefix: str = SNAPSHOT_PREFIX) -> int:
    """The sequence number for the next snapshot: one past the highest seen.

    Pass the names of every snapshot of the volume (operator snapshots are
    ignored). Derived from the names on the volume, so it survives agent
    restarts without any state of its own.
    """
    highest = -1
    for name in names:
        parsed = parse_snapshot_name(name, prefix)
        if parsed is not None:
            highest = max(highest, parsed[1])
    return highest + 1
