"""Agent logging: one line per event on stderr, in a form journald reads.

Lines look like `info op=create_volume volume=web peer=10.0.0.1 created`.
Under systemd (JOURNAL_STREAM set), each line starts with a `<N>` syslog
priority prefix, which journald turns into the entry's priority, so
`journalctl -p warning -u zflock-agent` works.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
CONTEXT_FIELDS = ("op", "volume", "peer", "job")


class LineFormatter(logging.Formatter):
    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        parts = [record.levelname.lower()]
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                parts.append(f"{name}={value}")
        message = record.getMessage()
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        parts.append(message.replace("\n", " "))
        line = " ".join(parts)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(journald="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger("zflock")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # asyncssh logs every channel at INFO: too chatty for a daemon's journal.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def ctx(**fields: Any) -> dict[str, Any]:
    """`log.info("...", extra=ctx(op="create", volume="web"))`"""
    return fields
