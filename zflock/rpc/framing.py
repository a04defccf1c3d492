"""Framing: one JSON object per line, then (for data operations) raw bytes.

A request is one line: {"zflock": VERSION, "op": NAME, "args": {...}}.
The agent answers with zero or more event lines ({"event": {...}}) and then
exactly one final line: {"result": {...}} or {"error": {...}}. Operations
that carry a ZFS stream send the raw bytes after the request line, until EOF.

Lines are capped so a hostile or broken peer cannot make us buffer without
bound before the JSON parser even runs.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from zflock.rpc.errors import ProtocolError

PROTOCOL_VERSION = 1
SUBSYSTEM = "zflock-rpc"
MAX_LINE = 1 << 20


class LineReader(Protocol):
    async def readline(self) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


def encode_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE} byte limit")
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed message: not a JSON object")
    return obj


async def read_message(reader: LineReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    line = await reader.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed in the middle of a message")
    return decode_line(line)


async def write_message(writer: Writer, obj: dict[str, Any]) -> None:
    writer.write(encode_line(obj))
    await writer.drain()
