"""Parsing of zfs/zpool output (samples from zfs-fuse) and of the probe's evidence."""

from __future__ import annotations

import pytest

from zflock.zfs import Completed, decide_capabilities
from zflock.zfs.parse import (
    ParseError,
    parse_get,
    parse_names,
    parse_pool_list,
    parse_resume_token_contents,
    parse_send_estimate,
    parse_size,
    parse_snapshots,
    parse_version,
    property_or_none,
)
from zflock.zfs.probe import PROBE_COMMANDS

# `zfs get -H -p -o name,property,source,value -r -d 1 guid,createtxg,creation,used,referenced`
# from zfs-fuse; note it sorts by name, not creation order.
GET_SNAPSHOTS = """\
tp/a\tguid\t-\t6989339391673342297
tp/a\tcreatetxg\t-\t7
tp/a\tcreation\t-\t1795628499
tp/a\tused\t-\t114688
tp/a\treferenced\t-\t114688
tp/a/child@x\tguid\t-\t42
tp/a@aa\tguid\t-\t7896422199387894405
tp/a@aa\tcreatetxg\t-\t17
tp/a@aa\tcreation\t-\t1795628501
tp/a@aa\tused\t-\t0
tp/a@aa\treferenced\t-\t114688
tp/a@zz\tguid\t-\t6335363238578846236
tp/a@zz\tcreatetxg\t-\t12
tp/a@zz\tcreation\t-\t1795628499
tp/a@zz\tused\t-\t4096
tp/a@zz\treferenced\t-\t114688
"""


def test_parse_get_and_unset_values() -> None:
    table = parse_get(
        "tp/a\tzflock:x\tlocal\t1\n"
        "tp/a\tzflock:y\t-\t-\n"
        "tp/a\tzflock:z\tlocal\t-\n"
        "tp/a\torigin\t-\t-\n"
        "tp/a\tquota\tdefault\t0\n"
        "tp/a\tzflock:note\tlocal\ttab\tinside\n"
        "tp/a\tzflock:origin\tinherited from tp\tnode1\n"
    )
    assert property_or_none(table, "tp/a", "zflock:x") == "1"
    assert property_or_none(table, "tp/a", "zflock:y") is None  # unset user property
    assert property_or_none(table, "tp/a", "zflock:z") == "-"  # set to the string "-"
    assert property_or_none(table, "tp/a", "origin") is None
    assert property_or_none(table, "tp/a", "quota") == "0"
    assert property_or_none(table, "tp/a", "zflock:note") == "tab\tinside"
    assert property_or_none(table, "tp/a", "zflock:origin") == "node1"
    assert property_or_none(table, "tp/a", "missing") is None
    assert property_or_none(table, "tp/b", "quota") is None


def test_parse_get_rejects_garbage() -> None:
    with pytest.raises(ParseError):
        parse_get("tp/a\tguid\n")


def test_snapshots_ordered_by_createtxg() -> None:
    snaps = parse_snapshots("tp/a", parse_get(GET_SNAPSHOTS))
    assert [s.name for s in snaps] == ["zz", "aa"]
    assert [s.index for s in snaps] == [0, 1]
    assert snaps[0].guid == 6335363238578846236
    assert snaps[0].createtxg == 12
    assert snaps[0].used == 4096
    assert snaps[0].full_name == "tp/a@zz"


def test_snapshots_ordered_by_listing_without_createtxg() -> None:
    text = "\n".join(line for line in GET_SNAPSHOTS.splitlines() if "createtxg" not in line)
    table = parse_get(text)
    snaps = parse_snapshots("tp/a", table, order=["zz", "aa"])
    assert [s.name for s in snaps] == ["zz", "aa"]
    assert all(s.createtxg is None for s in snaps)
    # A snapshot missing from the listing (taken in between) goes last.
    snaps = parse_snapshots("tp/a", table, order=["aa"])
    assert [s.name for s in snaps] == ["aa", "zz"]


def test_snapshots_exclude_other_datasets() -> None:
    snaps = parse_snapshots("tp/a", parse_get(GET_SNAPSHOTS))
    assert all(s.dataset == "tp/a" for s in snaps)
    assert parse_snapshots("tp/a/chil", parse_get(GET_SNAPSHOTS)) == []  # prefix, not parent


def test_snapshot_missing_number_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_snapshots("tp/a", parse_get("tp/a@s\tguid\t-\t6.70E\n"))


def test_names() -> None:
    assert parse_names("tp/a@1\ntp/a@2\n\n") == ["tp/a@1", "tp/a@2"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("250M", 250 * 1024**2),
        ("3.38M", int(3.38 * 1024**2)),
        ("1.5G", int(1.5 * 1024**3)),
        ("218K", 218 * 1024),
        ("-", 0),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_bad_size() -> None:
    with pytest.raises(ParseError):
        parse_size("lots")


def test_pool_list_human_and_parsable() -> None:
    # zfs-fuse: `zpool list -H -o name,size,allocated,free,health` (no -p)
    (pool,) = parse_pool_list("tp\t250M\t3.38M\t247M\tONLINE\n", parsable=False)
    assert pool.name == "tp" and pool.health == "ONLINE"
    assert pool.size == 250 * 1024**2
    # OpenZFS: with -p
    (pool,) = parse_pool_list("tank\t266338304\t1048576\t265289728\tONLINE\n", parsable=True)
    assert (pool.size, pool.allocated, pool.free) == (266338304, 1048576, 265289728)
    assert parse_pool_list("", parsable=True) == []
    with pytest.raises(ParseError):
        parse_pool_list("tank\t1\n", parsable=True)


def test_version() -> None:
    assert parse_version("zfs-2.1.11-1\nzfs-kmod-2.1.11-1\n") == "2.1.11"
    assert parse_version("zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n") == "2.3.2"
    assert parse_version("") is None


def test_send_estimate() -> None:
    assert parse_send_estimate("full\tp/a@s\t123456\nsize\t123456\n") == 123456
    assert parse_send_estimate("incremental\ts1\tp/a@s2\t4096\nsize\t4096\n") == 4096
    assert parse_send_estimate("nothing here\n") is None


# -- the capability probe's decision ------------------------------------------


def done(name: str, rc: int, stdout: str = "", stderr: str = "") -> Completed:
    return Completed(PROBE_COMMANDS[name], rc, stdout.encode(), stderr.encode())


# Real answers of zfs-fuse to the probe commands (captured on the lab machine).
ZFS_FUSE_PROBE = {
    "version": done("version", 2, stderr="unrecognized command 'version'\nusage: zfs command"),
    "createtxg": done(
        "createtxg",
        1,
        stderr="cannot open 'zflock-probe-nonexistent/probe': dataset does not exist\n",
    ),
    "resume_token_property": done(
        "resume_token_property",
        2,
        stderr="bad property list: invalid property 'receive_resume_token'\nusage:\n\tget",
    ),
    "list_parsable": done("list_parsable", 2, stderr="invalid option 'p'\nusage:\n\tlist"),
    "receive_unmounted": done(
        "receive_unmounted", 1, stderr="cannot receive: failed to read from stream\n"
    ),
    "receive_resumable": done("receive_resumable", 2, stderr="invalid option 's'\nusage:\n"),
    "send_resume": done("send_resume", 2, stderr="invalid option 't'\nusage:\n"),
    "send_estimates": done("send_estimates", 2, stderr="invalid option 'n'\nusage:\n"),
    "bookmarks": done("bookmarks", 2, stderr="unrecognized command 'bookmark'\nusage: zfs"),
    "holds": done("holds", 255, stdout="internal error: /usr/lib/zfs/pyzfs.py not found\n"),
}

NOT_FOUND = "cannot open 'zflock-probe-nonexistent/probe': dataset does not exist\n"
# What OpenZFS 2.1 answers (its parser accepts everything; the target is missing).
OPENZFS_PROBE = {
    "version": done("version", 0, stdout="zfs-2.1.11-1\nzfs-kmod-2.1.11-1\n"),
    "createtxg": done("createtxg", 1, stderr=NOT_FOUND),
    "resume_token_property": done("resume_token_property", 1, stderr=NOT_FOUND),
    "list_parsable": done("list_parsable", 1, stderr=NOT_FOUND),
    "receive_unmounted": done(
        "receive_unmounted", 1, stderr="cannot receive: failed to read from stream\n"
    ),
    "receive_resumable": done(
        "receive_resumable", 1, stderr="cannot receive: failed to read from stream\n"
    ),
    "send_resume": done(
        "send_resume", 255, stderr="cannot resume send: 'zflock-probe-token' is not a valid token\n"
    ),
    "send_estimates": done("send_estimates", 1, stderr=NOT_FOUND),
    "bookmarks": done("bookmarks", 1, stderr=NOT_FOUND),
    "holds": done("holds", 1, stderr=NOT_FOUND),
}


def test_probe_decides_zfs_fuse() -> None:
    caps = decide_capabilities(ZFS_FUSE_PROBE)
    assert caps.implementation == "zfs-fuse"
    assert caps.version is None
    assert (caps.resume_tokens, caps.holds, caps.bookmarks, caps.send_estimates) == (
        False,
        False,
        False,
        False,
    )
    assert caps.list_parsable is False
    assert caps.createtxg is True
    assert caps.receive_unmounted is True
    assert caps.readonly_fences_open_files is False  # a move's fence must unmount


def test_probe_decides_openzfs() -> None:
    caps = decide_capabilities(OPENZFS_PROBE)
    assert caps.implementation == "openzfs"
    assert caps.version == "2.1.11"
    assert all(
        (
            caps.resume_tokens,
            caps.receive_unmounted,
            caps.holds,
            caps.bookmarks,
            caps.send_estimates,
            caps.createtxg,
            caps.list_parsable,
            caps.readonly_fences_open_files,
        )
    )


def test_probe_one_missing_piece_disables_resume_tokens() -> None:
    results = dict(OPENZFS_PROBE)
    results["send_resume"] = done("send_resume", 2, stderr="invalid option 't'\nusage:\n")
    assert decide_capabilities(results).resume_tokens is False


# `zfs send -nvt TOKEN` on OpenZFS 2.1.11 (the destination's side of a cut full send).
TOKEN_CONTENTS = """resume token contents:
nvlist version: 0
\tobject = 0x2
\toffset = 0xc0000
\tbytes = 0xe1288
\ttoguid = 0xe55f9acf9099d393
\ttoname = pool/zflock/web@zflock-20261128T134003Z-000001
full send of pool/zflock/web@zflock-20261128T134003Z-000001 estimated size is 2.01M
"""


def test_resume_token_contents() -> None:
    info = parse_resume_token_contents(TOKEN_CONTENTS)
    assert info is not None
    assert info.to_guid == 0xE55F9ACF9099D393
    assert info.to_name == "pool/zflock/web@zflock-20261128T134003Z-000001"
    assert (info.from_guid, info.bytes) == (None, 0xE1288)
    incremental = TOKEN_CONTENTS.replace("\ttoguid", "\tfromguid = 0x10\n\ttoguid")
    assert parse_resume_token_contents(incremental).from_guid == 16  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cannot resume send: invalid resume token\n",
        TOKEN_CONTENTS.replace("\ttoname = ", "\tother = "),
        TOKEN_CONTENTS.replace("0xe55f9acf9099d393", "zz"),
    ],
)
def test_resume_token_contents_undecodable(text: str) -> None:
    assert parse_resume_token_contents(text) is None


def test_a_resume_token_is_none_when_zfs_prints_a_dash() -> None:
    from zflock.zfs.types import DatasetState, resume_token_value

    assert resume_token_value("1-abc-def") == "1-abc-def"
    assert [resume_token_value(v) for v in ("-", "", None)] == [None, None, None]
    state = DatasetState("p/v", {"receive_resume_token": "1-abc"}, frozenset(), [])
    assert state.resume_token == "1-abc"
    assert DatasetState("p/v", {}, frozenset(), []).resume_token is None
