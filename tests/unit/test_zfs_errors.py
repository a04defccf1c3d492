"""classify_error over real stderr.

ZFS_FUSE samples were captured from zfs-fuse (Debian, pool version 23) by
triggering each error for real. OPENZFS samples are written after the
wording of OpenZFS 2.x's libzfs for cases zfs-fuse words differently or
cannot produce; they were NOT captured here (this machine cannot load the
OpenZFS module), so the OpenZFS tier should replace them with real ones.
"""

from __future__ import annotations

import pytest

from zflock.errors import ZflockError
from zflock.zfs import (
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
    classify_error,
)

GET_USAGE = (
    'usage:\n\tget [-rHp] [-d max] [-o "all" | field[,...]] [-s source[,...]]\n'
    '\t    <"all" | property[,...]> [filesystem|volume|snapshot] ...\n'
)

ZFS_FUSE: list[tuple[str, type[ZfsError]]] = [
    ("cannot create 'tp/a': dataset already exists\n", DatasetExists),
    ("cannot create snapshot 'tp/a@s1': dataset already exists\n", DatasetExists),
    ("cannot rename 'tp/a': dataset already exists\n", DatasetExists),
    ("cannot create 'tp': pool already exists\n", DatasetExists),
    (
        "cannot receive new filesystem stream: destination 'tp/dst' exists\n"
        "must specify -F to overwrite it\n",
        DatasetExists,
    ),
    ("cannot create 'tp/nope/x': parent does not exist\n", DatasetNotFound),
    ("cannot open 'tp/nope': dataset does not exist\n", DatasetNotFound),
    ("cannot open 'tp/a@nope': dataset does not exist\n", DatasetNotFound),
    ("WARNING: could not send tp/src@9: does not exist\n", DatasetNotFound),
    ("cannot open 'nopool': no such pool\n", DatasetNotFound),
    (
        "umount: /zexpmnt/tp/b: target is busy.\n"
        "cannot unmount '/zexpmnt/tp/b': umount failed: umount child process failed\n",
        DatasetBusy,
    ),
    ("cannot destroy 'tp/a@s1': dataset is busy\n", DatasetBusy),
    (
        "cannot destroy snapshot tp/a@s1: it's being held. Run 'zfs holds -r tp/a@s1' to see "
        "holders.\n",
        DatasetBusy,
    ),  # OpenZFS 2.3
    ("cannot rename 'tp/rn1': dataset is busy\n", DatasetBusy),
    ("cannot receive new filesystem stream: out of space\n", OutOfSpace),
    (
        "cannot receive incremental stream: destination tp/dst has been modified\n"
        "since most recent snapshot\n",
        DestinationModified,
    ),
    (
        "cannot receive incremental stream: most recent snapshot of tp/dst does not\n"
        "match incremental source\n",
        NoMatchingSnapshot,
    ),
    (
        "warning: cannot send 'tp/src@1': not an earlier snapshot from the same fs\n",
        NoMatchingSnapshot,
    ),
    (
        "warning: cannot send 'tp/src@3': incremental source (@nope) does not exist\n",
        NoMatchingSnapshot,
    ),
    (
        "connect: Permission denied\ninternal error: failed to initialize ZFS library\n",
        PermissionDenied,
    ),
    ("bad property list: invalid property 'receive_resume_token'\n" + GET_USAGE, Unsupported),
    ("bad property list: invalid property 'written'\n" + GET_USAGE, Unsupported),
    ("invalid option 'p'\nusage:\n\tlist [-rH][-d max] [-o property[,...]]\n", Unsupported),
    ("invalid option 'n'\nusage:\n\tsend [-RDp] [-[iI] snapshot] <snapshot>\n", Unsupported),
    ("invalid option 's'\nusage:\n\treceive [-vnF] <filesystem|volume|snapshot>\n", Unsupported),
    ("unrecognized command 'bookmark'\nusage: zfs command args ...\n", Unsupported),
    ("unrecognized command 'version'\nusage: zfs command args ...\n", Unsupported),
    ("internal error: /usr/lib/zfs/pyzfs.py not found\n", Unsupported),
    # Failures that are none of the typed cases stay plain ZfsError.
    (
        "cannot rollback to 'tp/a@s1': more recent snapshots exist\n"
        "use '-r' to force deletion of the following snapshots:\ntp/a@s2\n",
        ZfsError,
    ),
    (
        "cannot destroy 'tp/a': filesystem has children\n"
        "use '-r' to destroy the following datasets:\ntp/a@s1\n",
        ZfsError,
    ),
    ("cannot set property for 'tp/a': 'readonly' must be one of 'on | off'\n", ZfsError),
    ("cannot set property for 'tp/a': 'guid' is readonly\n", ZfsError),
    ("'quota' property cannot be inherited\nuse 'zfs set quota=none' to clear\n", ZfsError),
    ("cannot mount 'tp/a': filesystem already mounted\n", ZfsError),
    ("cannot unmount 'tp/rn4': not currently mounted\n", ZfsError),
    ("cannot receive: failed to read from stream\n", ZfsError),
    ("cannot receive: invalid stream (bad magic number)\n", ZfsError),
    ("cannot create 'tp/a;b': invalid character ';' in name\n", ZfsError),
    ("cannot create 'mirror': name is reserved\npool name may have been omitted\n", ZfsError),
    ("cannot release 't1' from 'tp/a@s2': no such tag on this dataset\n", ZfsError),
    (
        "cannot mount '/zexpmnt/tp/q/child': failed to create mountpoint\n"
        "filesystem successfully created, but not mounted\n",
        ZfsError,
    ),
    (
        "connect: No such file or directory\n"
        "Please make sure that the zfs-fuse daemon is running.\n"
        "internal error: failed to initialize ZFS library\n",
        ZfsError,
    ),
]

OPENZFS: list[tuple[str, type[ZfsError]]] = [
    ("cannot create 'p/a': permission denied\n", PermissionDenied),
    ("cannot mount 'p/a': mountpoint or dataset is busy\n", DatasetBusy),
    ("cannot destroy 'p': pool or dataset is busy\n", DatasetBusy),
    ("cannot receive incremental stream: destination 'p/b' does not exist\n", NoMatchingSnapshot),
    ("could not find any snapshots to destroy; check snapshot names.\n", DatasetNotFound),
    (
        "cannot receive new filesystem stream: destination has snapshots (eg. p/b@s)\n"
        "must destroy them to overwrite it\n",
        DatasetExists,
    ),
    ("cannot create snapshot 'p/a@s': out of space\n", OutOfSpace),
    ("cannot hold snapshot 'p/a@s': operation not supported by zfs kernel module\n", Unsupported),
]


@pytest.mark.parametrize(("stderr", "expected"), ZFS_FUSE + OPENZFS)
def test_classification(stderr: str, expected: type[ZfsError]) -> None:
    argv = ["zfs", "something", "pool/x"]
    err = classify_error(argv, 1, stderr)
    assert type(err) is expected
    assert isinstance(err, ZflockError)
    assert err.argv == tuple(argv)
    assert err.returncode == 1
    assert err.stderr == stderr


def test_stream_mismatch_family() -> None:
    assert issubclass(DestinationModified, StreamMismatch)
    assert issubclass(NoMatchingSnapshot, StreamMismatch)
    assert issubclass(StreamMismatch, ZfsError)


def test_message_is_one_line_without_usage() -> None:
    err = classify_error(
        ["zfs", "get", "written", "p"],
        2,
        "bad property list: invalid property 'written'\n" + GET_USAGE,
    )
    text = str(err)
    assert "\n" not in text
    assert "usage" not in text
    assert text.startswith("`zfs get written p` failed: bad property list")


def test_wrapped_lines_are_joined() -> None:
    err = classify_error(
        ["zfs", "receive", "p/b"],
        1,
        "cannot receive incremental stream: destination p/b has been modified\n"
        "since most recent snapshot\n",
    )
    assert "modified since most recent snapshot" in str(err)


def test_empty_stderr_names_the_exit_status() -> None:
    err = classify_error(["zfs", "send", "p@s"], 141, "")
    assert type(err) is ZfsError
    assert "exit status 141" in str(err)


def test_busy_and_permission_messages_say_what_to_do() -> None:
    busy = classify_error(["zfs", "unmount", "p/a"], 1, "cannot destroy 'p/a': dataset is busy")
    assert "close files" in str(busy)
    denied = classify_error(["zfs", "create", "p/a"], 1, "connect: Permission denied")
    assert "root" in str(denied)


def test_long_stderr_is_truncated() -> None:
    err = classify_error(["zfs", "x"], 1, "cannot do it: " + "y" * 5000)
    assert len(str(err)) < 600
    assert len(err.stderr) > 5000  # the full text stays available
