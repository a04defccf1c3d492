"""Plain data the zfs layer hands to the rest of zflock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Snapshot:
    dataset: str  # "pool/vol"
    name: str  # short name after '@'
    guid: int
    createtxg: int | None  # None where the ZFS does not report it
    creation: int  # unix seconds
    used: int  # bytes
    referenced: int  # bytes
    index: int  # position in creation order (0 = oldest)

    @property
    def full_name(self) -> str:
        return f"{self.dataset}@{self.name}"


@dataclass(frozen=True)
class Bookmark:
    """A bookmark `dataset#name`: a snapshot's guid and createtxg, without its data."""

    dataset: str
    name: str  # short name after '#'
    guid: int
    createtxg: int
    creation: int  # unix seconds

    @property
    def full_name(self) -> str:
        return f"{self.dataset}#{self.name}"


@dataclass(frozen=True)
class Dataset:
    name: str
    type: str  # "filesystem" | "volume" | "snapshot"
    properties: Mapping[str, str] = field(
        default_factory=dict
    )  # raw -p values; unset user props absent


@dataclass(frozen=True)
class DatasetState:
    """A dataset's properties and its own snapshots, as one `zfs get -r -d 1` saw them."""

    name: str
    values: Mapping[str, str | None]  # raw -p values; None: unset ("-") or not reported
    local: frozenset[str]  # the properties set on the dataset itself (source "local")
    snapshots: list[Snapshot]  # oldest first

    def is_local(self, prop: str, value: str) -> bool:
        """Whether `prop` is set to `value` on the dataset itself (not inherited)."""
        return prop in self.local and self.values.get(prop) == value

    @property
    def resume_token(self) -> str | None:
        """Its `receive_resume_token`, if that was read and there is one."""
        return resume_token_value(self.values.get("receive_resume_token"))


def resume_token_value(raw: str | None) -> str | None:
    """A `receive_resume_token` as `zfs get` prints it: None when there is none ("-")."""
    return raw if raw and raw != "-" else None


@dataclass(frozen=True)
class ResumeTokenInfo:
    """What a `receive_resume_token` says (decoded by `zfs send -nvt`)."""

    to_guid: int  # the snapshot the interrupted stream was bringing
    to_name: str  # its full name on the *sending* node
    from_guid: int | None  # the incremental base; None for a full stream
    bytes: int | None  # how much had arrived when it stopped


@dataclass(frozen=True)
class Capabilities:
    implementation: str  # "zfs-fuse" | "openzfs"
    version: str | None  # e.g. "2.1.11"; None for zfs-fuse
    resume_tokens: bool  # receive -s / receive_resume_token / send -t
    receive_unmounted: bool  # receive -u
    holds: bool
    bookmarks: bool
    send_estimates: bool  # send -nP
    createtxg: bool
    list_parsable: bool  # zfs list -p / zpool list -p
    # `readonly=on` also refuses writes through files opened before it, and reads
    # "on" while mounted (OpenZFS). zfs-fuse lets such writes through, fsync and all,
    # and reports "off" until the unmount: there only an unmount fences
    # (move/zfs_source.py; both checked by tests/zfs/test_contract.py).
    readonly_fences_open_files: bool = False


@dataclass(frozen=True)
class PoolInfo:
    name: str
    size: int
    allocated: int
    free: int
    health: str
