"""Pure parsing of `zfs`/`zpool` output.

We read properties with `zfs get -H -p -o name,property,source,value`: it has
exact numbers on every implementation (zfs-fuse's `zfs list` has no `-p` and
prints a guid as "6.70E"). The value column comes last so a value containing
a tab would still parse; the source column tells an unset user property
("-" / "-") from one set to the string "-".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zflock.zfs.errors import ZfsError
from zflock.zfs.types import PoolInfo, ResumeTokenInfo, Snapshot

GET_FIELDS = "name,property,source,value"
SNAPSHOT_PROPERTIES = ("guid", "createtxg", "creation", "used", "referenced")


@dataclass(frozen=True)
class PropertyValue:
    value: str
    source: str

    @property
    def is_set(self) -> bool:
        """False for an unset property: both value and source are "-"."""
        return not (self.value == "-" and self.source == "-")


# name -> property -> value, in the order zfs printed the names.
PropertyTable = dict[str, dict[str, PropertyValue]]


class ParseError(ZfsError):
    """zfs printed something we do not understand."""


def parse_get(text: str) -> PropertyTable:
    """Parse `zfs get -H -p -o name,property,source,value` output."""
    table: PropertyTable = {}
    for line in text.splitlines():
        if not line:
            continue
        parts = line.split("\t", 3)
        if len(parts) != 4:
            raise ParseError(f"unexpected line from zfs get: {line!r}")
        name, prop, source, value = parts
        table.setdefault(name, {})[prop] = PropertyValue(value=value, source=source)
    return table


def property_or_none(table: PropertyTable, name: str, prop: str) -> str | None:
    pv = table.get(name, {}).get(prop)
    if pv is None or not pv.is_set:
        return None
    return pv.value


def parse_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"expected a number for {what}, got {value!r}") from None


def parse_snapshots(
    dataset: str,
    table: PropertyTable,
    *,
    order: Sequence[str] | None = None,
) -> list[Snapshot]:
    """Build the dataset's own snapshots from a `zfs get` table, oldest first.

    Ordered by createtxg when every snapshot has one (the only total order
    ZFS guarantees); otherwise by `order`, the short names in the order
    `zfs list -t snapshot -d 1` printed them, which is creation order.
    """
    prefix = dataset + "@"
    raw: list[tuple[str, dict[str, PropertyValue]]] = [
        (name[len(prefix) :], props) for name, props in table.items() if name.startswith(prefix)
    ]

    def num(props: Mapping[str, PropertyValue], prop: str, snap: str) -> int:
        pv = props.get(prop)
        if pv is None or not pv.is_set:
            raise ParseError(f"zfs get did not report {prop} for {dataset}@{snap}")
        return parse_int(pv.value, f"{prop} of {dataset}@{snap}")

    def txg(props: Mapping[str, PropertyValue]) -> int | None:
        pv = props.get("createtxg")
        if pv is None or not pv.is_set or not pv.value.isdigit():
            return None
        return int(pv.value)

    txgs = {short: txg(props) for short, props in raw}
    if raw and all(t is not None for t in txgs.values()):
        raw.sort(key=lambda item: txgs[item[0]] or 0)
    elif order is not None:
        position = {short: i for i, short in enumerate(order)}
        # Names missing from `order` (created between the two commands) go last.
        raw.sort(key=lambda item: (position.get(item[0], len(position)), item[0]))
    return [
        Snapshot(
            dataset=dataset,
            name=short,
            guid=num(props, "guid", short),
            createtxg=txgs[short],
            creation=num(props, "creation", short),
            used=num(props, "used", short),
            referenced=num(props, "referenced", short),
            index=i,
        )
        for i, (short, props) in enumerate(raw)
    ]


def parse_names(text: str) -> list[str]:
    """One name per line (`zfs list -H -o name`)."""
    return [line for line in text.splitlines() if line]


_SIZE = re.compile(r"(?P<num>\d+(?:\.\d+)?)(?P<unit>[BKMGTPEZ]?)", re.IGNORECASE)
_UNITS = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6, "Z": 7}


def parse_size(text: str) -> int:
    """A size as ZFS prints it without -p ("250M", "3.38M", "0"), in bytes.

    Approximate by nature (three significant digits); used only where the
    running ZFS has no parsable output (zfs-fuse's `zpool list`).
    """
    text = text.strip()
    if text in ("-", "none"):
        return 0
    m = _SIZE.fullmatch(text)
    if not m:
        raise ParseError(f"expected a size like 250M, got {text!r}")
    return int(float(m["num"]) * (1024 ** _UNITS[m["unit"].upper()]))


POOL_FIELDS = "name,size,allocated,free,health"


def parse_pool_list(text: str, *, parsable: bool) -> list[PoolInfo]:
    """Parse `zpool list -H [-p] -o name,size,allocated,free,health`."""
    pools: list[PoolInfo] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 5:
            raise ParseError(f"unexpected line from zpool list: {line!r}")
        name, size, alloc, free, health = parts
        conv = (lambda v, w: parse_int(v, w)) if parsable else (lambda v, w: parse_size(v))
        pools.append(
            PoolInfo(
                name=name,
                size=conv(size, "size"),
                allocated=conv(alloc, "allocated"),
                free=conv(free, "free"),
                health=health,
            )
        )
    return pools


_VERSION = re.compile(r"zfs-(\d+(?:\.\d+)+)")


def parse_version(text: str) -> str | None:
    """The userland version from `zfs version` ("zfs-2.1.11-1" -> "2.1.11")."""
    m = _VERSION.search(text)
    return m[1] if m else None


def parse_send_estimate(text: str) -> int | None:
    """The total from `zfs send -nP` ("size\\t12345"), or None if absent."""
    size: int | None = None
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0] == "size" and parts[-1].strip().isdigit():
            size = int(parts[-1].strip())
    return size


_TOKEN_FIELD = re.compile(r"^\s*(toguid|toname|fromguid|bytes)\s*=\s*(\S+)\s*$")


def parse_resume_token_contents(text: str) -> ResumeTokenInfo | None:
    """The fields of `zfs send -nvt TOKEN`'s "resume token contents:" listing.

    None when the listing is absent or lacks `toguid`/`toname` (not a token
    this ZFS could decode). Numbers are printed in hex ("0xe55f9acf9099d393").
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = _TOKEN_FIELD.match(line)
        if m:
            fields.setdefault(m[1], m[2])

    def number(key: str) -> int | None:
        value = fields.get(key)
        if value is None:
            return None
        try:
            return int(value, 0)
        except ValueError:
            return None

    to_guid = number("toguid")
    if to_guid is None or "toname" not in fields:
        return None
    return ResumeTokenInfo(
        to_guid=to_guid, to_name=fields["toname"], from_guid=number("fromguid"),
        bytes=number("bytes"),
    )  # fmt: skip


def format_properties(flag: str, properties: Mapping[str, str]) -> list[str]:
    """["-o", "k=v", ...] for create/snapshot/zpool create."""
    argv: list[str] = []
    for key, value in properties.items():
        argv += [flag, f"{key}={value}"]
    return argv


def join_list(items: Iterable[str]) -> str:
    return ",".join(items)
