"""Typed errors of `zfs`/`zpool` commands, classified from their stderr.

`classify_error` is pure: it maps the text a command printed to the error
class the rest of zflock can act on (a missing dataset, a diverged
destination, ...). The patterns come from real stderr of zfs-fuse (samples
in tests/unit/test_zfs_errors.py) and from libzfs's messages, which OpenZFS
shares with zfs-fuse (both descend from the same libzfs).
"""

from __future__ import annotations

from collections.abc import Sequence

from zflock.errors import ZflockError

_MAX_MESSAGE = 400


class ZfsError(ZflockError):
    """A `zfs` or `zpool` command failed (or was refused before it ran)."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.argv: tuple[str, ...] = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr


class DatasetNotFound(ZfsError):
    """The dataset, snapshot or pool does not exist."""


class DatasetExists(ZfsError):
    """The dataset, snapshot or pool already exists."""


class DatasetBusy(ZfsError):
    """The dataset is in use (open files, a cwd, a hold) or still settling."""


class OutOfSpace(ZfsError):
    """The pool is full or a quota was hit."""


class StreamMismatch(ZfsError):
    """A send stream does not fit the receiving (or the sending) side."""


class DestinationModified(StreamMismatch):
    """The destination changed since its most recent snapshot; only -F would apply the stream."""


class NoMatchingSnapshot(StreamMismatch):
    """The incremental base is missing or is not the destination's most recent snapshot."""


class ZfsTimeout(ZfsError):
    """A command outlived its deadline (or a stream moved no bytes for too long); it was
    killed by its PID. What it changed, if anything, is unknown: callers treat it as a
    failure of that step and decide from their own state, never from a guess."""


class PermissionDenied(ZfsError):
    """The caller may not run this command (not root, no delegation, socket refused)."""


class Unsupported(ZfsError):
    """The running ZFS lacks the feature (an option, a command, a property)."""


# (class, substrings) checked in order against lower-cased stderr. The order
# matters: the most specific meaning wins (e.g. "permission denied" is printed
# together with "internal error" by zfs-fuse; "destination ... has been
# modified" is an incremental-receive problem, not a generic one).
_RULES: tuple[tuple[type[ZfsError], tuple[str, ...]], ...] = (
    (PermissionDenied, ("permission denied", "operation not permitted")),
    (DestinationModified, ("has been modified",)),
    (
        NoMatchingSnapshot,
        (
            "does not match incremental source",
            "not an earlier snapshot from the same fs",
            "incremental source (",  # "... incremental source (@x) does not exist"
            "no matching snapshot",
        ),
    ),
    (OutOfSpace, ("out of space", "no space left", "quota exceeded")),
    (
        DatasetBusy,
        (
            "is busy",
            "target is busy",
            "device busy",
            "resource busy",
            "pool or dataset is busy",
            # OpenZFS 2.3 names the reason when a hold keeps a snapshot:
            # "cannot destroy snapshot p/a@s: it's being held. Run 'zfs holds ...'".
            "it's being held",
        ),
    ),
    (
        DatasetExists,
        ("already exists", "must specify -f to overwrite", "must destroy them to overwrite"),
    ),
    (
        DatasetNotFound,
        (
            "does not exist",
            "no such pool",
            "no such dataset",
            "could not find any snapshots to destroy",
        ),
    ),
    (
        Unsupported,
        (
            "invalid option",
            "unrecognized command",
            "invalid property",
            "operation not supported",
            "not supported",
            "unsupported",
            "pyzfs.py not found",  # zfs-fuse's `zfs holds`
        ),
    ),
)


def summarize_stderr(stderr: str) -> str:
    """The meaningful part of stderr on one line: no usage text, whitespace collapsed."""
    lines: list[str] = []
    for line in stderr.splitlines():
        if line.strip().lower().startswith("usage:"):
            break  # the rest is the command's usage, useless in a one-line error
        if line.strip():
            lines.append(line.strip())
    text = " ".join(lines)
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def classify_class(stderr: str) -> type[ZfsError]:
    """The most specific ZfsError subclass that stderr describes (ZfsError if none)."""
    # zfs wraps long messages ("... does not\nmatch incremental source"):
    # match on the text with all whitespace collapsed.
    text = " ".join(stderr.lower().split())
    if (
        "has been modified" not in text
        and "incremental stream" in text
        and "does not exist" in text
    ):
        # OpenZFS: "cannot receive incremental stream: destination 'x' does not
        # exist" -- the base is missing, which is a mismatch, not a lookup error.
        return NoMatchingSnapshot
    for cls, needles in _RULES:
        if any(needle in text for needle in needles):
            return cls
    return ZfsError


def classify_error(argv: Sequence[str], returncode: int | None, stderr: str) -> ZfsError:
    """Build the typed error for a failed command from its argv, exit status and stderr."""
    cls = classify_class(stderr)
    summary = summarize_stderr(stderr) or f"exit status {returncode}"
    command = " ".join(argv) if argv else "zfs"
    message = f"`{command}` failed: {summary}"
    if cls is DatasetBusy:
        message += " (close files or leave directories inside it, then retry)"
    elif cls is PermissionDenied:
        message += " (run as root, or check the ZFS socket's permissions)"
    return cls(message, argv=argv, returncode=returncode, stderr=stderr)
