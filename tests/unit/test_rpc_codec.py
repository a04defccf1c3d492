"""Strict message decoding: round trips, and hostile input is a ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.rpc import codec
from zflock.rpc.errors import ProtocolError, RemoteError, RemoteUsageError
from zflock.rpc.exchange import remote_error, request
from zflock.rpc.framing import MAX_LINE, decode_line, encode_line
from zflock.rpc.messages import CreateVolume, ListVolumes, NodeInfo, VolumeInfo, VolumeList

INFO = VolumeInfo(
    name="web", node="node1", id="0" * 8 + "-0000-0000-0000-" + "0" * 12, role="primary",
    epoch=3, origin="node1", mountpoint="/zflock/web", mounted=True, readonly=False,
    used=1, referenced=2, quota=None, snapshots=0, latest_snapshot=None,
    latest_snapshot_time=None,
)  # fmt: skip


def test_round_trip_nested() -> None:
    msg = VolumeList(volumes=[INFO, INFO])
    assert codec.decode(VolumeList, codec.encode(msg)) == msg


@given(st.text(max_size=50), st.one_of(st.none(), st.integers(min_value=1)), st.booleans())
def test_round_trip_create(name: str, quota: int | None, wait: bool) -> None:
    msg = CreateVolume(name=name, quota=quota, wait=wait)
    assert codec.decode(CreateVolume, decode_line(encode_line(codec.encode(msg)))) == msg


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "missing field 'name'"),
        ({"name": 3}, "expected str"),
        ({"name": "a", "quota": "1G"}, "expected int"),
        ({"name": "a", "quota": True}, "expected int"),
        ({"name": "a", "wait": 1}, "expected bool"),
        ({"name": "a", "evil": 1}, "unknown field 'evil'"),
        ([1, 2], "expected an object"),
    ],
)
def test_decode_rejects(data: object, expected: str) -> None:
    with pytest.raises(ProtocolError, match=expected):
        codec.decode(CreateVolume, data)


def test_defaults_apply() -> None:
    assert codec.decode(ListVolumes, {}) == ListVolumes(names=[])
    assert codec.decode(CreateVolume, {"name": "a"}).wait is True


def test_nested_errors_name_the_path() -> None:
    bad = codec.encode(VolumeList(volumes=[INFO]))
    bad["volumes"][0]["epoch"] = "3"
    with pytest.raises(ProtocolError, match=r"volumes\[0\]\.epoch"):
        codec.decode(VolumeList, bad)


def test_float_accepts_int_but_not_bool() -> None:
    base = dict(
        node="n", agent_version="1", protocol=1, zfs_implementation="zfs-fuse",
        zfs_version=None, capabilities={"holds": False}, pool_root="t/z", mount_root="/z",
        pool_size=1, pool_free=1, running_jobs=0,
    )  # fmt: skip
    assert codec.decode(NodeInfo, {**base, "uptime_s": 5}).uptime_s == 5.0
    with pytest.raises(ProtocolError):
        codec.decode(NodeInfo, {**base, "uptime_s": True})
    with pytest.raises(ProtocolError, match=r"capabilities\.holds"):
        codec.decode(NodeInfo, {**base, "uptime_s": 1, "capabilities": {"holds": "yes"}})


@pytest.mark.parametrize(
    "line", [b"not json\n", b"[1,2]\n", b"\xff\xfe\n", b'"str"\n', b"{" * 10 + b"\n"]
)
def test_framing_rejects_garbage(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_line(line)


def test_framing_caps_size() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_line(b'{"a":"' + b"x" * MAX_LINE + b'"}\n')


def test_request_envelope_and_unknown_op() -> None:
    assert request("create_volume", CreateVolume(name="a")) == {
        "zflock": 1,
        "op": "create_volume",
        "args": {"name": "a", "quota": None, "wait": True},
    }
    with pytest.raises(ProtocolError, match="unknown operation"):
        request("rm_rf", CreateVolume(name="a"))


def test_remote_errors_keep_their_kind() -> None:
    usage = remote_error("n1", {"type": "InvalidName", "message": "bad", "usage": True})
    assert isinstance(usage, RemoteUsageError)
    assert str(usage) == "n1: bad"
    op = remote_error("n1", {"type": "DatasetBusy", "message": "busy", "usage": False})
    assert isinstance(op, RemoteError) and not isinstance(op, RemoteUsageError)
    assert remote_error("n1", "garbage").kind == "ProtocolError"


def test_replica_state_carries_every_field_the_planner_reads() -> None:
    """What the destination found must reach the source's planner whole: a field dropped
    on the wire (resume_to_guid once was) silently changes the plan."""
    import dataclasses

    from zflock.replication.model import ReplicaInfo, SnapRef
    from zflock.rpc.messages import ReplicaState
    from zflock.rpc.replica import replica_info, replica_state

    info = ReplicaInfo(
        exists=True, managed_volume="web", volume_id="id-1", role="replica", epoch=4,
        modified_since_last_snapshot=True, resume_token="1-ab-cd-ef", resume_to_guid=77,
        snapshots=[SnapRef(name="s1", guid=5, order=1, size=10)], label="node2:web",
    )  # fmt: skip
    defaults = ReplicaInfo(exists=False)
    # Every field is set to something other than its default, so a dropped one shows.
    assert all(getattr(info, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(info))
    wire = codec.decode(ReplicaState, decode_line(encode_line(codec.encode(
        replica_state(info, resume_supported=True)))))  # fmt: skip
    assert wire.resume_supported
    assert replica_info(wire, "node2:web") == info
