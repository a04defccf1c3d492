"""The only code in zflock that runs `zfs` and `zpool`.

Public API (see each module): names are validated before anything runs,
output is parsed from `-H -p`, failures are typed errors, and what the
running ZFS supports comes from a probe rather than from guesses.
"""

from __future__ import annotations

from zflock.zfs.client import Zfs, receive_argv, send_argv
from zflock.zfs.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationModified,
    NoMatchingSnapshot,
    OutOfSpace,
    PermissionDenied,
    StreamMismatch,
    Unsupported,
    ZfsError,
    ZfsTimeout,
    classify_error,
)
from zflock.zfs.names import (
    InvalidName,
    split_snapshot_name,
    validate_bookmark_name,
    validate_component,
    validate_dataset_name,
    validate_pool_name,
    validate_property_name,
    validate_snapshot_name,
    validate_user_property,
)
from zflock.zfs.probe import decide_capabilities, probe_capabilities
from zflock.zfs.runner import Completed, Runner
from zflock.zfs.streams import ReceiveStream, SendStream, pipe
from zflock.zfs.types import (
    Bookmark,
    Capabilities,
    Dataset,
    DatasetState,
    PoolInfo,
    ResumeTokenInfo,
    Snapshot,
)

__all__ = [
    "Bookmark",
    "Capabilities",
    "Completed",
    "Dataset",
    "DatasetBusy",
    "DatasetExists",
    "DatasetNotFound",
    "DatasetState",
    "DestinationModified",
    "InvalidName",
    "NoMatchingSnapshot",
    "OutOfSpace",
    "PermissionDenied",
    "PoolInfo",
    "ReceiveStream",
    "ResumeTokenInfo",
    "Runner",
    "SendStream",
    "Snapshot",
    "StreamMismatch",
    "Unsupported",
    "Zfs",
    "ZfsError",
    "ZfsTimeout",
    "classify_error",
    "decide_capabilities",
    "pipe",
    "probe_capabilities",
    "receive_argv",
    "send_argv",
    "split_snapshot_name",
    "validate_bookmark_name",
    "validate_component",
    "validate_dataset_name",
    "validate_pool_name",
    "validate_property_name",
    "validate_snapshot_name",
    "validate_user_property",
]
