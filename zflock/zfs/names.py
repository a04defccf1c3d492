"""Validation of ZFS names, done before any command runs.

Pure functions: each returns the name unchanged when it is valid and raises
InvalidName (a UsageError, CLI exit 2) naming the name and the rule it broke.

The rules follow ZFS's own (zfs_namecheck.c, zfsprops(7)), made stricter
where ZFS's rules would hurt us:
- a space is valid in ZFS but not here (names travel through argv, logs and
  `-H` tab-separated output, where a space is a trap);
- no component may start with "-", so no name is ever read as an option.
"""

from __future__ import annotations

import re

from zflock.errors import UsageError

# ZFS_MAX_DATASET_NAME_LEN is 256 including the terminating NUL.
MAX_NAME_LEN = 255
# ZAP_MAXNAMELEN: a property name is stored as a ZAP key of at most 256 bytes incl. NUL.
MAX_PROPERTY_LEN = 255

_COMPONENT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
_USER_PROP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.:-")
# Pool names ZFS reserves for vdev keywords; "mirror", "raidz", "draid" and
# "spare" as prefixes (zpool_name_valid), "log" exactly, and disk-like "c0...".
_RESERVED_POOL_PREFIXES = ("mirror", "raidz", "draid", "spare")
_RESERVED_POOL_NAMES = frozenset({"log"})
_NATIVE_PROPERTY = re.compile(r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.:-]+)?")


class InvalidName(UsageError):
    """A dataset, snapshot, pool or property name that ZFS (or zflock) would refuse."""


def _fail(what: str, name: str, rule: str) -> InvalidName:
    return InvalidName(f"invalid {what} {name!r}: {rule}")


def validate_component(name: str, what: str = "name") -> str:
    """One path component: a volume's short name, a snapshot's short name, ..."""
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {name!r}: not a string")
    if name == "":
        raise _fail(what, name, "empty")
    for ch in name:
        if ch not in _COMPONENT_CHARS:
            raise _fail(what, name, f"character {ch!r} not allowed (use A-Z a-z 0-9 _ . : -)")
    if name in (".", ".."):
        raise _fail(what, name, f"{name!r} is not a valid component")
    if name.startswith("-"):
        raise _fail(what, name, "must not start with '-'")
    if len(name) > MAX_NAME_LEN:
        raise _fail(what, name, f"longer than {MAX_NAME_LEN} characters")
    return name


def _validate_path(name: str, what: str) -> None:
    if name == "":
        raise _fail(what, name, "empty")
    if name.startswith("/"):
        raise _fail(what, name, "must not start with '/'")
    if name.endswith("/"):
        raise _fail(what, name, "must not end with '/'")
    parts = name.split("/")
    for part in parts:
        if part == "":
            raise _fail(what, name, "empty component ('//')")
        try:
            validate_component(part, what)
        except InvalidName as exc:
            # Re-raise naming the whole name, keeping the component's rule.
            rule = str(exc).split(": ", 1)[1]
            raise _fail(what, name, f"component {part!r}: {rule}") from None
    _check_pool_part(parts[0], name, what)


def _check_pool_part(pool: str, name: str, what: str) -> None:
    if not pool[0].isascii() or not pool[0].isalpha():
        raise _fail(what, name, f"pool name {pool!r} must start with a letter")


def _check_length(name: str, what: str) -> None:
    if len(name) > MAX_NAME_LEN:
        raise _fail(what, name, f"longer than {MAX_NAME_LEN} characters")


def validate_dataset_name(name: str, what: str = "dataset name") -> str:
    """A filesystem or volume name like "pool/a/b" (no '@' or '#')."""
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {name!r}: not a string")
    if "@" in name:
        raise _fail(what, name, "'@' not allowed (that is a snapshot name)")
    if "#" in name:
        raise _fail(what, name, "'#' not allowed (that is a bookmark name)")
    _validate_path(name, what)
    _check_length(name, what)
    return name


def split_snapshot_name(name: str, what: str = "snapshot name") -> tuple[str, str]:
    """Split "pool/a@snap" into ("pool/a", "snap"), validating both parts."""
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {name!r}: not a string")
    if name.count("@") != 1:
        raise _fail(what, name, "must contain exactly one '@' (dataset@snapshot)")
    dataset, snap = name.split("@")
    if "#" in name:
        raise _fail(what, name, "'#' not allowed")
    if dataset == "":
        raise _fail(what, name, "dataset part before '@' is empty")
    _validate_path(dataset, what)
    try:
        validate_component(snap, what)
    except InvalidName as exc:
        rule = str(exc).split(": ", 1)[1]
        raise _fail(what, name, f"snapshot part {snap!r}: {rule}") from None
    _check_length(name, what)
    return dataset, snap


def validate_snapshot_name(name: str) -> str:
    """A full snapshot name like "pool/a@snap"."""
    split_snapshot_name(name)
    return name


def validate_bookmark_name(name: str) -> str:
    """A full bookmark name like "pool/a#mark"."""
    what = "bookmark name"
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {name!r}: not a string")
    if name.count("#") != 1 or "@" in name:
        raise _fail(what, name, "must contain exactly one '#' (dataset#bookmark) and no '@'")
    dataset, mark = name.split("#")
    _validate_path(dataset, what)
    validate_component(mark, what)
    _check_length(name, what)
    return name


def validate_pool_name(name: str) -> str:
    """A pool name: one component, starting with a letter, not a reserved word."""
    what = "pool name"
    validate_component(name, what)
    if "/" in name:
        raise _fail(what, name, "'/' not allowed")
    if not name[0].isascii() or not name[0].isalpha():
        raise _fail(what, name, "must start with a letter")
    if name in _RESERVED_POOL_NAMES or name.startswith(_RESERVED_POOL_PREFIXES):
        raise _fail(what, name, "reserved by ZFS (mirror*, raidz*, draid*, spare*, log)")
    if len(name) >= 2 and name[0] == "c" and name[1].isdigit():
        raise _fail(what, name, "looks like a disk name (c[0-9]...), which ZFS refuses")
    return name


def validate_user_property(name: str) -> str:
    """A user property name like "zflock:epoch" (zfsprops(7) rules).

    Lower-case letters, digits and ':' '-' '.' '_'; must contain ':'.
    """
    what = "user property name"
    if not isinstance(name, str):
        raise InvalidName(f"invalid {what} {name!r}: not a string")
    if name == "":
        raise _fail(what, name, "empty")
    for ch in name:
        if ch not in _USER_PROP_CHARS:
            raise _fail(what, name, f"character {ch!r} not allowed (use a-z 0-9 : - . _)")
    if ":" not in name:
        raise _fail(what, name, "must contain ':' (module:property)")
    if name.startswith("-"):
        raise _fail(what, name, "must not start with '-'")
    if len(name) > MAX_PROPERTY_LEN:
        raise _fail(what, name, f"longer than {MAX_PROPERTY_LEN} characters")
    return name


def validate_property_name(name: str) -> str:
    """A native ("quota", "userquota@bob") or user ("zflock:epoch") property name."""
    if isinstance(name, str) and ":" in name:
        return validate_user_property(name)
    if not isinstance(name, str) or not _NATIVE_PROPERTY.fullmatch(name):
        raise InvalidName(f"invalid property name {name!r}: not a native or user property name")
    return name


def validate_property_value(prop: str, value: str) -> str:
    """A property value that survives argv and `-H` output unchanged."""
    if not isinstance(value, str):
        raise InvalidName(f"invalid value for property {prop!r}: {value!r} is not a string")
    for bad in ("\n", "\t", "\0"):
        if bad in value:
            raise InvalidName(
                f"invalid value for property {prop!r}: {bad!r} not allowed (breaks -H output)"
            )
    return value
