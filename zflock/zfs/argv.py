"""Pure argv building and name checks shared by the `Zfs` operations (no I/O).

Every name is validated before a command is built, so nothing that came from
a peer or a user can pass for an option.
"""

from __future__ import annotations

from collections.abc import Mapping

from zflock.zfs.names import (
    InvalidName,
    validate_bookmark_name,
    validate_dataset_name,
    validate_property_name,
    validate_property_value,
    validate_snapshot_name,
)


def validate_any_name(name: str) -> str:
    """A dataset, snapshot or bookmark name."""
    if "@" in name:
        return validate_snapshot_name(name)
    if "#" in name:
        return validate_bookmark_name(name)
    return validate_dataset_name(name)


def validate_properties(properties: Mapping[str, str]) -> None:
    for key, value in properties.items():
        validate_property_name(key)
        validate_property_value(key, value)


def validate_resume_token(token: str) -> str:
    """A token comes from another node: never let it pass for an option or be empty."""
    if not token or token.startswith("-") or any(c.isspace() for c in token):
        raise InvalidName(f"invalid resume token {token!r}")
    return token


def send_argv(
    snapshot: str,
    *,
    base: str | None = None,
    intermediates: bool = False,
    replicate: bool = False,
    props: bool = False,
    resume_token: str | None = None,
) -> list[str]:
    """The argv of `zfs send` for these options (validated)."""
    if resume_token is not None:
        if base is not None or intermediates or replicate or props:
            raise InvalidName("a resumed send takes its options from the token; give no others")
        return ["zfs", "send", "-t", validate_resume_token(resume_token)]
    validate_snapshot_name(snapshot)
    argv = ["zfs", "send"]
    if replicate:
        argv.append("-R")
    if props:
        argv.append("-p")
    if base is not None:
        if "#" in base:
            validate_bookmark_name(base)
            if intermediates:
                raise InvalidName(f"-I needs a snapshot as base, not the bookmark {base!r}")
        else:
            validate_snapshot_name(base)
        argv += ["-I" if intermediates else "-i", base]
    elif intermediates:
        raise InvalidName("intermediates=True needs a base snapshot")
    return [*argv, snapshot]


def receive_argv(
    dataset: str, *, force: bool = False, unmounted: bool = False, resumable: bool = False
) -> list[str]:
    """The argv of `zfs receive`. `-F` appears only with force=True."""
    if "@" in dataset:
        validate_snapshot_name(dataset)
    else:
        validate_dataset_name(dataset)
    argv = ["zfs", "receive"]
    if force:
        argv.append("-F")
    if unmounted:
        argv.append("-u")
    if resumable:
        argv.append("-s")
    return [*argv, dataset]
