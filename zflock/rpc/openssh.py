"""The CLI's transport: OpenSSH's `ssh` speaking the agents' `zflock-rpc` subsystem.

Why: a quick CLI command is mostly start-up, and `import asyncssh` alone costs about
0.2 s (docs/benchmarks.md); `ssh` is a C program, on every host that runs sshd. It
keeps the asyncssh client's guarantees (rpc/client.py): the node's host key from the
inventory and nothing else (a known_hosts file of that one key, written for the call;
no system or user config, no TOFU, no DNS), our key only, public-key auth only, no
agent or forwarding, keepalives that give up on a dead peer, a handshake bounded by
the timeout. One `ssh` process per call. The agents keep asyncssh: they hold their
connections open and stream ZFS data through them.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from zflock.cluster.config import NodeEntry
from zflock.errors import UsageError
from zflock.rpc.errors import (
    HOST_KEY_MISMATCH,
    KEY_REJECTED,
    HostKeyMismatch,
    NodeUnreachable,
    ProtocolError,
    RemoteError,
)
from zflock.rpc.exchange import EventHandler, read_result, request
from zflock.rpc.framing import MAX_LINE, SUBSYSTEM, encode_line

USERNAME = "zflock"  # both clients (rpc/client.py imports these from here)
# Both clients offer these, in this order: the agents' end is asyncssh, where AES-GCM
# runs at about twice chacha20's rate (LAB.md); OpenSSH would offer chacha20 first.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
)
# A peer that stops answering (host down, link cut) is given up after about
# INTERVAL * COUNT seconds, so an interrupted call or transfer fails and can be
# rerun instead of hanging on a dead TCP connection.
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3
# After the answer, `ssh` closes the channel and exits at once; a hung one is killed.
END_WAIT = 5.0
STDERR_KEPT = 16 << 10
KEY_TYPE = re.compile(r"[a-z0-9][a-z0-9@.+-]*")
KEY_BLOB = re.compile(r"[A-Za-z0-9+/]+={0,2}")
OPENSSH_KEY = b"-----BEGIN OPENSSH PRIVATE KEY-----"
# Paths ssh takes literally in an option's value (it splits on spaces, and expands
# '%' and '~'); anything else goes to asyncssh (the key) or /tmp (known_hosts).
SAFE_PATH = re.compile(r"[A-Za-z0-9_./+@:=,-]+")


@dataclass(frozen=True)
class OpenSSHIdentity:
    """The CLI's private key, for `ssh -i` (checked by `openssh_problem` first)."""

    private_key: Path


def openssh_problem(key: Path) -> str | None:
    """Why `ssh` would not use this key file (None: it would). ssh ignores a key that
    others can read and, in batch mode, one it cannot read without a passphrase; the
    asyncssh client reads more formats, so the CLI falls back to it (cli/common.py)."""
    try:
        mode = key.stat().st_mode
        with key.open("rb") as f:
            head = f.read(len(OPENSSH_KEY))
    except FileNotFoundError:
        raise UsageError(f"identity key {key} not found") from None
    except OSError as exc:
        raise UsageError(f"cannot read identity key {key}: {exc.strerror}") from None
    if not SAFE_PATH.fullmatch(str(key.absolute())):
        return f"{key}: ssh would read its spaces, quotes, '%' or '~' as syntax"
    if mode & 0o077:
        return f"{key} can be read by other users (ssh requires mode 0600)"
    if head != OPENSSH_KEY:
        return f"{key} is not in OpenSSH's private key format"
    return None


SSH_CLIENTS = ("auto", "openssh", "asyncssh")


def openssh_identity(key: Path) -> OpenSSHIdentity | str:
    """`key` for `ssh`, or why ssh will not be used with it. $ZFLOCK_SSH chooses: `auto`
    (ssh if it is on PATH and would use the key), `openssh` (a UsageError naming why
    not, if it cannot be used) or `asyncssh`."""
    choice = os.environ.get("ZFLOCK_SSH", "auto")
    if choice not in SSH_CLIENTS:
        raise UsageError(f"ZFLOCK_SSH={choice!r}: expected one of {', '.join(SSH_CLIENTS)}")
    if choice == "asyncssh":
        return "ZFLOCK_SSH=asyncssh"
    problem = openssh_problem(key) if shutil.which("ssh") else "no `ssh` on PATH"
    if problem is None:
        return OpenSSHIdentity(key.absolute())  # ssh runs from our cwd, but be plain
    if choice == "openssh":
        raise UsageError(f"ZFLOCK_SSH=openssh, but {problem}")
    return problem


def alias(node: NodeEntry) -> str:
    # Node names are [a-z0-9-] (cluster/config.py): safe as a known_hosts host name.
    return f"zflock-agent-{node.name}"


def known_hosts_line(node: NodeEntry) -> str:
    """The inventory's host key as the one line of a known_hosts file."""
    parts = node.host_key.split(" ")
    shaped = len(parts) >= 2 and KEY_TYPE.fullmatch(parts[0]) and KEY_BLOB.fullmatch(parts[1])
    if not node.host_key.isprintable() or not shaped:
        raise NodeUnreachable(node.name, "bad host key in inventory: not 'TYPE BASE64 [comment]'")
    return f"{alias(node)} {parts[0]} {parts[1]}\n"


def ssh_argv(node: NodeEntry, key: Path, known_hosts: Path, timeout: float) -> list[str]:
    """`ssh` opening the zflock-rpc subsystem on `node`, trusting only `known_hosts`."""
    options = {
        "BatchMode": "yes",  # never a prompt: a password, a passphrase, a new host key
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": alias(node),
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "VerifyHostKeyDNS": "no",
        "IdentityFile": str(key),
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PreferredAuthentications": "publickey",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "ControlMaster": "no",
        "ControlPath": "none",
        "ConnectTimeout": str(max(1, math.ceil(timeout))),  # the handshake too
        "ServerAliveInterval": str(KEEPALIVE_INTERVAL),
        "ServerAliveCountMax": str(KEEPALIVE_COUNT),
        "Ciphers": ",".join(CIPHERS),
        "LogLevel": "ERROR",
        "Port": str(node.port),
        "User": USERNAME,
    }
    argv = ["ssh", "-F", "/dev/null", "-T"]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, "-s", node.address, SUBSYSTEM]


def unreachable(node: str, stderr: str, timeout: float) -> NodeUnreachable:
    """What `ssh`'s complaint means, worded as the asyncssh client words it."""
    text = stderr.strip()
    if "Host key verification failed" in text or "HOST IDENTIFICATION HAS CHANGED" in text:
        return HostKeyMismatch(node, HOST_KEY_MISMATCH)
    if "Permission denied" in text:
        return NodeUnreachable(node, KEY_REJECTED)
    if "timed out" in text:
        return NodeUnreachable(node, f"no answer within {timeout:.0f} s")
    last = text.splitlines()[-1].strip() if text else "ssh ended without a word"
    # "ssh: connect to host 10.0.0.1 port 7744: Connection refused" -> "Connection refused"
    return NodeUnreachable(node, last.rsplit(": ", 1)[-1] if last.startswith("ssh: ") else last)


class OpenSSHClient:
    """One node's agent through `ssh`, with AgentClient's `call`. Nothing is held
    between calls, so entering and leaving the context does nothing."""

    def __init__(self, node: NodeEntry, identity: OpenSSHIdentity, *, timeout: float = 10.0):
        self.node = node
        self._key = identity.private_key
        self._timeout = timeout

    async def __aenter__(self) -> OpenSSHClient:
        return self

    async def connect(self) -> None:
        return None  # each call connects

    async def close(self) -> None:
        return None

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def call(self, op: str, args: Any, *, on_event: EventHandler | None = None) -> Any:
        """Run one operation and return its decoded result dataclass."""
        line = encode_line(request(op, args))
        hosts = known_hosts_line(self.node)
        where = tempfile.gettempdir()
        fd, path = tempfile.mkstemp(
            prefix="zflock-known-hosts-", dir=where if SAFE_PATH.fullmatch(where) else "/tmp"
        )
        try:
            with os.fdopen(fd, "w") as f:
                f.write(hosts)
            argv = ssh_argv(self.node, self._key, Path(path), self._timeout)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=MAX_LINE + 1,  # the framing's own cap decides (framing.py)
            )
            errors = asyncio.ensure_future(_kept(proc.stderr))
            try:
                return await self._exchange(proc, op, line, errors, on_event)
            except RemoteError:
                raise  # a whole answer: ssh ends by itself once its stdin closes
            except BaseException:
                _kill(proc)  # cancelled, or an answer cut short: the channel is useless
                raise
            finally:
                await _end(proc, errors)
        finally:
            os.unlink(path)

    async def _exchange(
        self,
        proc: asyncio.subprocess.Process,
        op: str,
        line: bytes,
        errors: asyncio.Future[bytes],
        on_event: EventHandler | None,
    ) -> Any:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(line)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # ssh is gone already: its stderr says why, below
        try:
            result = await read_result(self.node.name, op, proc.stdout, on_event)
        except ValueError:  # a line over the reader's limit
            raise ProtocolError(f"{self.node.name}: a message exceeds {MAX_LINE} bytes") from None
        except NodeUnreachable as exc:
            # The answer never came: if ssh failed, its stderr says why.
            try:
                async with asyncio.timeout(END_WAIT):
                    stderr = (await asyncio.shield(errors)).decode(errors="replace")
                    status = await proc.wait()
            except TimeoutError:
                raise exc from None
            if status == 0 or not stderr.strip():
                raise
            raise unreachable(self.node.name, stderr, self._timeout) from None
        return result


async def _kept(stream: asyncio.StreamReader | None) -> bytes:
    """Read a stream to its end, keeping its first STDERR_KEPT bytes."""
    kept = bytearray()
    while stream is not None and (chunk := await stream.read(1 << 16)):
        kept += chunk[: max(0, STDERR_KEPT - len(kept))]
    return bytes(kept)


async def _end(proc: asyncio.subprocess.Process, errors: asyncio.Future[bytes]) -> None:
    """Let `ssh` close the channel and exit; kill it (our child, through its handle) if
    it has not within END_WAIT, or if the call was cancelled."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(END_WAIT):
            await proc.wait()
    except TimeoutError:
        pass  # an answer already read stands; the hung process goes below
    finally:
        errors.cancel()
        if proc.returncode is None:
            _kill(proc)
            try:
                async with asyncio.timeout(END_WAIT):
                    await proc.wait()
            except TimeoutError:
                pass  # stuck in the kernel: nothing more to do from here


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL our `ssh` child by its PID. Not `proc.kill()`: Popen polls first, and
    one that has just exited is then reaped under asyncio's child watcher, which
    prints "Unknown child process" on stderr (a second line of a one-line error)."""
    if proc.returncode is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited meanwhile: the watcher reaps it
