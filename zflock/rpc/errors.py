"""Errors of the RPC layer, and how remote errors travel.

An agent answers a failed request with {"error": {"type", "message", "usage"}}.
The client turns it back into RemoteError (exit 1) or RemoteUsageError
(exit 2) so the CLI's exit code says whose fault it was, on whichever node.
"""

from __future__ import annotations

from zflock.errors import UsageError, ZflockError

# Why a connection was refused, worded the same whichever SSH client met it.
HOST_KEY_MISMATCH = (
    "host key does not match the inventory (refusing to talk to it; "
    "check the inventory's host_key for this node)"
)
KEY_REJECTED = "our key was rejected (is it in the agent's authorized_keys?)"


class RpcError(ZflockError):
    """Talking to an agent failed."""


class ProtocolError(RpcError):
    """A message was malformed, too large, or of an unknown version or operation."""


class NodeUnreachable(RpcError):
    """The agent of a node could not be reached or refused the connection."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} unreachable: {reason}")
        self.node = node
        self.reason = reason


class HostKeyMismatch(NodeUnreachable):
    """The agent's host key is not the one in the inventory: refuse to talk."""


class RemoteError(RpcError):
    """The agent ran the request and it failed there."""

    def __init__(self, node: str, kind: str, message: str) -> None:
        super().__init__(f"{node}: {message}")
        self.node = node
        self.kind = kind
        self.remote_message = message


class RemoteUsageError(RemoteError, UsageError):
    """The agent refused the request as bad input."""
