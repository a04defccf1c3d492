"""The only code in zflock that runs `zfs` and `zpool`.

Public API (see each module): names are validated before anything runs,
output is parsed from `-H -p`, failures are typed errors, and what the
running ZFS supports comes from a probe rather than from guesses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names below load their module on first use (PEP 562): a front end that needs
# only the name rules or the types (the CLI) does not pay for the client, the
# streams and the probe (about 15 ms of every CLI command's start-up).
_EXPORTS = {
    "Bookmark": "zflock.zfs.types",
    "Capabilities": "zflock.zfs.types",
    "Completed": "zflock.zfs.runner",
    "Dataset": "zflock.zfs.types",
    "DatasetBusy": "zflock.zfs.errors",
    "DatasetExists": "zflock.zfs.errors",
    "DatasetNotFound": "zflock.zfs.errors",
    "DatasetState": "zflock.zfs.types",
    "DestinationModified": "zflock.zfs.errors",
    "InvalidName": "zflock.zfs.names",
    "NoMatchingSnapshot": "zflock.zfs.errors",
    "OutOfSpace": "zflock.zfs.errors",
    "PermissionDenied": "zflock.zfs.errors",
    "PoolInfo": "zflock.zfs.types",
    "ReceiveStream": "zflock.zfs.streams",
    "ResumeTokenInfo": "zflock.zfs.types",
    "Runner": "zflock.zfs.runner",
    "SendStream": "zflock.zfs.streams",
    "Snapshot": "zflock.zfs.types",
    "StreamMismatch": "zflock.zfs.errors",
    "Unsupported": "zflock.zfs.errors",
    "Zfs": "zflock.zfs.client",
    "ZfsError": "zflock.zfs.errors",
    "ZfsTimeout": "zflock.zfs.errors",
    "classify_error": "zflock.zfs.errors",
    "decide_capabilities": "zflock.zfs.probe",
    "pipe": "zflock.zfs.streams",
    "probe_capabilities": "zflock.zfs.probe",
    "receive_argv": "zflock.zfs.client",
    "send_argv": "zflock.zfs.client",
    "split_snapshot_name": "zflock.zfs.names",
    "validate_bookmark_name": "zflock.zfs.names",
    "validate_component": "zflock.zfs.names",
    "validate_dataset_name": "zflock.zfs.names",
    "validate_pool_name": "zflock.zfs.names",
    "validate_property_name": "zflock.zfs.names",
    "validate_snapshot_name": "zflock.zfs.names",
    "validate_user_property": "zflock.zfs.names",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


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
