"""Agent logging: one line per event, in a form journald reads.

Lines look like `info op=create_volume volume=web peer=10.0.0.1 created`.

Under systemd (JOURNAL_STREAM names our stderr), each event goes to journald
over its native protocol instead, with the context as fields of their own:
`ZFLOCK_OP`, `ZFLOCK_VOLUME`, `ZFLOCK_PEER`, `ZFLOCK_JOB`, and a priority, so
`journalctl -u zflock-agent ZFLOCK_VOLUME=web` or `-p warning` work. The
message text stays the same line. If the journal socket refuses an entry,
the line goes to stderr (journald still reads it there, with a `<N>` syslog
priority prefix), so no event is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
CONTEXT_FIELDS = ("op", "volume", "peer", "job")
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "zflock-agent"


def priority(record: logging.LogRecord) -> int:
    return _PRIORITY.get(record.levelno, 6)


class LineFormatter(logging.Formatter):
    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def line(self, record: logging.LogRecord) -> str:
        parts = [record.levelname.lower()]
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                parts.append(f"{name}={value}")
        message = record.getMessage()
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        parts.append(message.replace("\n", " "))
        return " ".join(parts)

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record)
        if self.journald:
            return f"<{priority(record)}>{line}"
        return line


def journal_fields(record: logging.LogRecord, line: str) -> dict[str, str]:
    """The journal entry for one event: the line, its priority, the context fields."""
    fields = {
        "MESSAGE": line,
        "PRIORITY": str(priority(record)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
    }
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[f"ZFLOCK_{name.upper()}"] = str(value)
    return fields


def encode_journal(fields: dict[str, str]) -> bytes:
    """journald's native datagram format (systemd.journal-fields(7), "native protocol").

    A value without a newline is `NAME=value\\n`; one with a newline is
    `NAME\\n` + 64-bit little-endian length + the bytes + `\\n`, so no value
    can forge a field of its own.
    """
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def stderr_is_journal(environ: Mapping[str, str], fd: int = 2) -> bool:
    """JOURNAL_STREAM is `device:inode` of the stream systemd connected; check it is ours."""
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JournalHandler(logging.Handler):
    """Sends each record to journald as its own entry; falls back to stderr."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.lines = LineFormatter(journald=True)
        self.fallback = logging.StreamHandler(sys.stderr)
        self.fallback.setFormatter(self.lines)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.lines.line(record)
            self.sock.sendto(encode_journal(journal_fields(record, line)), self.path)
        except OSError:
            # Too large for a datagram, or journald restarting: stderr still reaches it.
            self.fallback.emit(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


def setup_logging(level: int = logging.INFO) -> None:
    handler: logging.Handler
    journald = "JOURNAL_STREAM" in os.environ
    if stderr_is_journal(os.environ) and os.path.exists(JOURNAL_SOCKET):
        handler = JournalHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LineFormatter(journald=journald))
    root = logging.getLogger("zflock")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # asyncssh logs every channel at INFO: too chatty for a daemon's journal.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def ctx(**fields: Any) -> dict[str, Any]:
    """`log.info("...", extra=ctx(op="create", volume="web"))`"""
    return fields
