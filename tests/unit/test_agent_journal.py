"""The agent's journal entries: context as fields, values that cannot forge fields."""

from __future__ import annotations

import logging
import os
import socket
import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from zflock.agent.logs import JournalHandler, encode_journal, journal_fields, stderr_is_journal


def decode_journal(data: bytes) -> dict[str, str]:
    """journald's reading of a native datagram (the inverse of encode_journal)."""
    fields: dict[str, str] = {}
    while data:
        head, sep, rest = data.partition(b"\n")
        assert sep, "every field ends with a newline"
        if b"=" in head:
            name, _, value = head.partition(b"=")
            fields[name.decode()] = value.decode()
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[head.decode()] = rest[8 : 8 + size].decode()
            assert rest[8 + size : 9 + size] == b"\n"
            data = rest[9 + size :]
    return fields


names = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)


@given(st.dictionaries(names, st.text(st.characters(exclude_categories=["Cs"]))))
def test_any_value_round_trips(fields: dict[str, str]) -> None:
    assert decode_journal(encode_journal(fields)) == fields


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("zflock.agent", logging.WARNING, __file__, 1, "moved %s", ("x",), None)
    rec.__dict__.update(extra)
    return rec


def test_context_becomes_fields() -> None:
    fields = journal_fields(record(volume="web", op="move", peer=None), "the line")
    assert fields["ZFLOCK_VOLUME"] == "web"
    assert fields["ZFLOCK_OP"] == "move"
    assert "ZFLOCK_PEER" not in fields
    assert fields["PRIORITY"] == "4"
    assert fields["MESSAGE"] == "the line"


def test_a_volume_name_with_a_newline_cannot_add_a_field() -> None:
    fields = journal_fields(record(volume="web\nPRIORITY=0"), "line")
    decoded = decode_journal(encode_journal(fields))
    assert decoded["ZFLOCK_VOLUME"] == "web\nPRIORITY=0"
    assert decoded["PRIORITY"] == "4"


def test_handler_sends_one_datagram_per_event(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        handler = JournalHandler(str(path))
        try:
            handler.handle(record(volume="db", job="j1"))
        finally:
            handler.close()
        listener.settimeout(5)
        entry = decode_journal(listener.recv(65536))
    assert entry["ZFLOCK_VOLUME"] == "db"
    assert entry["ZFLOCK_JOB"] == "j1"
    assert entry["MESSAGE"] == "warning volume=db job=j1 moved x"
    assert entry["SYSLOG_IDENTIFIER"] == "zflock-agent"


def test_journal_stream_must_name_our_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st_ = os.fstat(f.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{st_.st_dev}:{st_.st_ino}"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st_.st_dev}:1"}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, f.fileno())
        assert not stderr_is_journal({}, f.fileno())
