"""One request and its answer, whatever carries them (asyncssh in the agents, the
OpenSSH client in the CLI): the request line, then event lines until exactly one
result or error line (framing.py). No SSH library is imported here, so a front
end that does not use asyncssh does not pay its import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zflock.rpc import codec
from zflock.rpc.errors import (
    NodeUnreachable,
    ProtocolError,
    RemoteError,
    RemoteUsageError,
)
from zflock.rpc.framing import PROTOCOL_VERSION, LineReader, read_message
from zflock.rpc.messages import OPERATIONS

EventHandler = Callable[[dict[str, Any]], None]


def request(op: str, args: Any) -> dict[str, Any]:
    if op not in OPERATIONS:
        raise ProtocolError(f"unknown operation {op!r}")
    return {"zflock": PROTOCOL_VERSION, "op": op, "args": codec.encode(args)}


def remote_error(node: str, error: Any) -> RemoteError:
    if not isinstance(error, dict):
        return RemoteError(node, "ProtocolError", "malformed error from agent")
    kind = str(error.get("type", "Error"))
    message = str(error.get("message", "unknown error"))
    cls = RemoteUsageError if error.get("usage") else RemoteError
    return cls(node, kind, message)


async def read_result(
    node: str,
    op: str,
    reader: LineReader,
    on_event: EventHandler | None = None,
    lost: tuple[type[BaseException], ...] = (OSError,),
) -> Any:
    """The decoded result of `op`, passing events on; `lost`: the transport's errors
    that mean the connection went away (NodeUnreachable, which callers retry)."""
    _, result_type = OPERATIONS[op]
    while True:
        try:
            message = await read_message(reader)
        except lost as exc:
            raise NodeUnreachable(node, f"connection lost: {exc}") from None
        if message is None:
            raise NodeUnreachable(node, f"agent closed the channel during {op}")
        if "event" in message:
            if on_event is not None and isinstance(message["event"], dict):
                on_event(message["event"])
            continue
        if "error" in message:
            raise remote_error(node, message["error"])
        if "result" in message:
            return codec.decode(result_type, message["result"], f"{op} result")
        raise ProtocolError(f"{node}: unexpected message during {op}")
