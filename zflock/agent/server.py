"""The agent's SSH endpoint and its lifecycle.

asyncssh serves one subsystem, `zflock-rpc`; shells, exec requests, port
forwarding, agent and X11 forwarding are all refused. Clients and peer
agents authenticate by public key only, against the authorized keys file.

Shutdown (SIGTERM): stop accepting, tell systemd STOPPING=1, let running
operations finish for `shutdown_grace` seconds, then cancel what is left
and exit 0. Every operation is written so that cancelling it leaves ZFS
consistent (e.g. a volume is created with all its properties in one
`zfs create`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncssh

from zflock import __version__
from zflock.agent.docker.plugin import DockerPlugin
from zflock.agent.failover import Failover
from zflock.agent.handlers import Call, Handlers
from zflock.agent.locks import VolumeLocks
from zflock.agent.metrics import Metrics, MetricsError, MetricsServer
from zflock.agent.notify import sd_notify
from zflock.agent.observing import ObservedRunner
from zflock.agent.peer_pool import PeerPool
from zflock.agent.quickack import ack_quickly
from zflock.agent.rejoin import Rejoiner
from zflock.agent.scheduled_run import handlers_link
from zflock.agent.scheduler import Scheduler
from zflock.agent.selffence import SelfFence
from zflock.cluster.config import AgentConfig
from zflock.errors import UsageError, ZflockError
from zflock.events import NO_OBSERVER, AgentStarted, FanOut, Observer
from zflock.rpc import codec
from zflock.rpc.client import (
    CIPHERS,
    KEEPALIVE_COUNT,
    KEEPALIVE_INTERVAL,
    MAX_PACKET,
    WINDOW,
)
from zflock.rpc.errors import ProtocolError
from zflock.rpc.framing import PROTOCOL_VERSION, SUBSYSTEM, read_message, write_message
from zflock.rpc.messages import OPERATIONS
from zflock.zfs import Zfs

log = logging.getLogger("zflock.agent")
T = TypeVar("T")


class StartupError(ZflockError):
    """The agent cannot start; the message says what to fix."""


@dataclass
class LoadedKeys:
    host_key: asyncssh.SSHKey
    authorized: asyncssh.SSHAuthorizedKeys


def _read_key_file(what: str, path: object, reader: Callable[[str], T]) -> T:
    try:
        return reader(str(path))
    except FileNotFoundError:
        raise StartupError(f"{what} {path} not found") from None
    except PermissionError:
        raise StartupError(f"{what} {path} is not readable (permission denied)") from None
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise StartupError(f"{what} {path} is unusable: {exc}") from None


def load_keys(config: AgentConfig) -> LoadedKeys:
    return LoadedKeys(
        host_key=_read_key_file("host key", config.host_key, asyncssh.read_private_key),
        authorized=_read_key_file(
            "authorized keys file", config.authorized_keys, asyncssh.read_authorized_keys
        ),
    )


def _await_chain(obj: object) -> list[str]:
    """Follow a coroutine's awaits down to what it waits on (get_stack shows one frame)."""
    chain: list[str] = []
    while obj is not None and len(chain) < 50:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        code = getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None)
        if code is not None:
            line = frame.f_lineno if frame is not None else "?"
            chain.append(f"{code.co_name}:{line}")
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        if nxt is None and code is None:
            chain.append(type(obj).__name__)
        obj = nxt
    return chain


def dump_tasks() -> None:
    """SIGUSR1: log where every task waits (for an operator debugging a stuck job)."""
    for task in asyncio.all_tasks():
        where = " -> ".join(_await_chain(task.get_coro()))
        log.warning("task %s: %s", task.get_name(), where or "(not started)")
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=N in the agent's environment
        for stat in tracemalloc.take_snapshot().statistics("traceback")[:8]:
            where = " <- ".join(str(frame) for frame in reversed(stat.traceback))
            log.warning("memory: %d KiB in %d blocks at %s", stat.size >> 10, stat.count, where)


class _SSHServer(asyncssh.SSHServer):
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._peer = conn.get_extra_info("peername", ("?", 0))[0]
        ack_quickly(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s lost: %s", getattr(self, "_peer", "?"), exc)

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False


class Agent:
    def __init__(
        self, config: AgentConfig, zfs: Zfs | None = None, observer: Observer | None = None
    ) -> None:
        self.config = config
        # Typed events (zflock/events.py) go to the metrics exporter, if served, and `observer`.
        self.metrics = Metrics() if config.metrics is not None else None
        observers = [o for o in (self.metrics, observer) if o is not None]
        self.observer: Observer = FanOut(observers) if observers else NO_OBSERVER
        self._metrics_server: MetricsServer | None = None
        self.zfs = zfs or Zfs(ObservedRunner(observer=self.observer))
        self.locks = VolumeLocks()
        self.handlers = Handlers(config, self.zfs, self.locks, self.observer)
        self._ops = self.handlers.table()
        self.docker = DockerPlugin(config, self.handlers)
        self._ops.update(self.docker.operations())
        # The majority lease and self-fencing (agent/selffence.py, docs/failover.md).
        self.selffence = SelfFence(
            config, self.zfs, self.locks, self.handlers.volumes, lambda: self.handlers.peer_key
        )
        self._ops.update(self.selffence.operations())
        rejoiner = Rejoiner(
            config, self.zfs, self.locks, self.handlers.volumes, lambda: self.handlers.peer_key
        )
        self._ops.update(rejoiner.operations())
        # `zflock failover` (agent/failover.py): promote this node's replica of a volume.
        failover = Failover(config, self.zfs, self.locks, lambda: self.handlers.peer_key)
        self._ops["failover"] = failover.failover
        # Continuous replication (agent/scheduler.py): reloads its policies after
        # any operation that may change them.
        # Its runs share one kept connection per peer (agent/peer_pool.py).
        self.peer_pool = PeerPool(self.handlers.links.key)
        self.scheduler = Scheduler(
            config, self.handlers.volumes, self.locks, self.handlers.jobs,
            handlers_link(self.handlers, self.peer_pool), self.observer,
        )  # fmt: skip
        self._ops["schedules"] = self.scheduler.schedules
        for op in ("set_policy", "promote_replica", "resolve_move", "failover"):
            self._ops[op] = self.scheduler.reloading(self._ops[op])
        self._ops["move"] = self.scheduler.pausing(self._ops["move"])
        self._server: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def preflight(self) -> LoadedKeys:
        keys = load_keys(self.config)
        if not await self.zfs.exists(self.config.pool_root):
            raise StartupError(
                f"pool root {self.config.pool_root} does not exist; create it with "
                f"`zfs create -o mountpoint=none {self.config.pool_root}`"
            )
        caps = await self.zfs.capabilities()
        node, version = self.config.node, caps.version or "unknown"
        self.observer.emit(AgentStarted(node, __version__, caps.implementation, version))
        return keys

    async def start(self) -> None:
        keys = await self.preflight()
        self.handlers.peer_key = keys.host_key
        try:
            self._server = await asyncssh.listen(
                self.config.listen,
                self.config.port,
                server_factory=_SSHServer,
                server_host_keys=[keys.host_key],
                authorized_client_keys=keys.authorized,
                process_factory=self._session,
                encoding=None,
                allow_pty=False,
                x11_forwarding=False,
                agent_forwarding=False,
                encryption_algs=list(CIPHERS),
                keepalive_interval=KEEPALIVE_INTERVAL,
                keepalive_count_max=KEEPALIVE_COUNT,
                window=WINDOW,
                max_pktsize=MAX_PACKET,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {self.config.port} on {self.config.listen} is already in use"
                ) from None
            where = f"{self.config.listen}:{self.config.port}"
            raise StartupError(f"cannot listen on {where}: {exc}") from None
        log.info(
            "listening on %s:%d as node %s (pool root %s)",
            self.config.listen,
            self.config.port,
            self.config.node,
            self.config.pool_root,
        )
        # Before anything else that acts on volumes: ping peers, compare epochs.
        self.selffence.start()
        await self.docker.start()
        self._serve_metrics()
        # A move cut short by a crash left a marker on the source: finish or undo it.
        await self.handlers.moves.recover_all()
        self.scheduler.start()

    def _serve_metrics(self) -> None:
        if self.metrics is None or self.config.metrics is None:
            return
        where = self.config.metrics
        server = MetricsServer(self.metrics, where.address, where.port)
        try:
            server.start()
        except MetricsError as exc:
            # Not fatal: the agent's work (and its safety duties: recovery, fencing)
            # matters more than its numbers. Prometheus shows the target down.
            log.error("%s; running without metrics", exc)
            return
        self._metrics_server = server

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, shut down cleanly."""
        loop = asyncio.get_running_loop()
        await self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
        sd_notify("READY=1")
        await self._stop.wait()
        await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        await self.selffence.stop()
        await self.scheduler.stop()  # starts nothing more; its running jobs are waited below
        running = {*self._tasks, *self.handlers.jobs.tasks()}
        log.info("stopping: %d operation(s) running", len(running))
        if self._server is not None:
            self._server.close()
        await self.docker.stop()
        for task in list(self.handlers.moves.background):
            task.cancel()  # recovery retries: the marker stays, the next start resumes them
        if running:
            _, pending = await asyncio.wait(running, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d operation(s) after the grace period", len(pending))
                await asyncio.wait(pending, timeout=5)
        await self.peer_pool.close()  # the scheduled runs that used it have ended
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
        log.info("stopped")

    # -- one session = one request ---------------------------------------------------

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stop.is_set():
            await self._reply_error(process, ZflockError("agent is shutting down"))
            process.exit(1)
            return
        self._tasks.add(task)
        self.handlers.running += 1
        try:
            await self._serve(process)
        finally:
            self.handlers.running -= 1
            self._tasks.discard(task)

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        peer, port = process.get_extra_info("peername", ("?", 0))[:2]
        op = "?"
        status = 1
        try:
            if process.subsystem != SUBSYSTEM:
                raise ProtocolError(f"only the {SUBSYSTEM} subsystem is served")
            message = await read_message(process.stdin)
            if message is None:
                return
            if message.get("zflock") != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"protocol version {message.get('zflock')!r} not supported "
                    f"(this agent speaks {PROTOCOL_VERSION})"
                )
            op = str(message.get("op"))
            if op not in self._ops:
                raise ProtocolError(f"unknown operation {op!r}")
            arg_type, _ = OPERATIONS[op]
            args: object = codec.decode(arg_type, message.get("args", {}), f"{op} arguments")

            async def send_event(event: dict[str, object]) -> None:
                await write_message(process.stdout, {"event": event})

            volume = getattr(args, "name", None)
            # host:port names the connection: calls sharing one show the same port.
            log.info("request from %s:%s", peer, port, extra={"op": op, "volume": volume})
            call = Call(peer=peer, send_event=send_event, read=process.stdin.read)
            result = await self._ops[op](args, call)
            await write_message(process.stdout, {"result": codec.encode(result)})
            status = 0
        except ZflockError as exc:
            log.warning("%s", exc, extra={"op": op, "peer": peer})
            await self._reply_error(process, exc)
        except asyncio.CancelledError:
            await self._reply_error(process, ZflockError("operation cancelled: agent stopping"))
            raise
        except (BrokenPipeError, ConnectionError, asyncssh.Error):
            log.info("client went away", extra={"op": op, "peer": peer})
        except Exception as exc:
            log.exception("internal error", extra={"op": op, "peer": peer})
            await self._reply_error(process, ZflockError(f"internal error in agent: {exc!r}"))
        finally:
            try:
                process.exit(status)
            except (OSError, asyncssh.Error):
                pass

    async def _reply_error(self, process: asyncssh.SSHServerProcess[bytes], exc: Exception) -> None:
        error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "usage": isinstance(exc, UsageError),
        }
        try:
            await write_message(process.stdout, {"error": error})
        except (OSError, asyncssh.Error):
            pass
