"""Agent configuration and the cluster inventory, from TOML files.

Two files (see docs/configuration.md):

* the node file (default /etc/zflock/agent.toml): which node this is and
  where its volumes live;
* the cluster inventory (default /etc/zflock/cluster.toml): every node's
  address, port and SSH host public key. The CLI and the agents both read it.

Parsing is strict: an unknown key is an error (a typo such as `pool-root`
must not silently fall back to a default), and every error names the file,
the key and what is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zflock.cluster.lease import SELF_FENCE_MAX, SELF_FENCE_MIN
from zflock.errors import UsageError

DEFAULT_AGENT_CONFIG = Path("/etc/zflock/agent.toml")
DEFAULT_CLUSTER_FILE = Path("/etc/zflock/cluster.toml")
CLUSTER_ENV = "ZFLOCK_CLUSTER"
DEFAULT_PORT = 7744
DEFAULT_MOUNT_ROOT = "/zflock"
DEFAULT_METRICS_PORT = 9574
DEFAULT_DOCKER_SOCKET = Path("/run/docker/plugins/zflock.sock")

# Node names appear in logs, properties and SSH usernames: keep them to
# hostname characters. Validated here, at the edge, before any use.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PUBLIC_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?")


class ConfigError(UsageError):
    """A configuration or inventory file is missing, malformed or inconsistent."""


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise UsageError(
            f"invalid node name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class HookConfig:
    """Commands (argv lists, never shell strings) run around a cutover."""

    pre_cutover: tuple[str, ...] = ()
    post_cutover: tuple[str, ...] = ()
    rollback: tuple[str, ...] = ()
    timeout: float = 60.0


@dataclass(frozen=True)
class MetricsConfig:
    """`[metrics]`: where the agent serves Prometheus metrics (docs/metrics.md)."""

    address: str = "127.0.0.1"  # loopback by default: exposing it is the operator's choice
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class MoveDeadlines:
    """Seconds each step of a move's cutover may take: `[deadlines]` in agent.toml.

    The source is read-only through these steps, so none may wait for ever
    (docs/move.md, "Deadlines"). A deadline missed before the promote request
    is sent rolls the move back; one missed after it leaves the source fenced
    and settles the move in the background.
    """

    fence: float = 15.0  # marker, readonly=on, unmount
    final_snapshot: float = 15.0
    final_delta: float = 15.0  # without progress: no byte moved and no step done for this long
    verify: float = 15.0  # ask the destination for its newest snapshot
    promote: float = 30.0  # the promote call, the destination's post-cutover hooks included
    resolve: float = 10.0  # one "did you promote?" call after a lost promote answer
    settle: float = 30.0  # how long the move keeps asking before leaving it to recovery


DEADLINE_MAX = 3600.0


# The keep rules a policy gets unless the operator gives its own: every
# snapshot of the last hour, then one an hour for a day, one a day for two weeks.
DEFAULT_KEEP = "1x1h(keep=all) | 24x1h | 14x1d"


@dataclass(frozen=True)
class ReplicationConfig:
    """`[replication]`: this node's defaults for volumes' replication policies.

    Kept as written: the duration and keep-rule grammars live in
    `replication/`, which this layer may not import.
    `zflock.replication.policy.defaults_from_config` parses them (naming
    this file and the key on an error), and the agent does that at startup.
    """

    every: str = "1m"  # the interval of `zflock replicate --every` given without a value
    keep: str = DEFAULT_KEEP  # on the primary
    keep_replica: str = DEFAULT_KEEP  # on each replica
    # Scheduled runs this node has going at once (each sends one stream, then prunes).
    # 4, not 2: with 2, a node under load (a run ~0.5 s of wall time) could keep only
    # ~4 runs a second going, and 100 volumes every 30 s need 3.3, so runs queued
    # and started seconds late (docs/benchmarks.md, "Continuous replication at scale").
    max_streams: int = 4


@dataclass(frozen=True)
class FailoverConfig:
    """`[failover]`: self-fencing of an isolated primary (docs/failover.md)."""

    # A primary that cannot reach a majority of the inventory's nodes for this
    # long fences itself. Bounds in zflock.cluster.lease (SELF_FENCE_MIN/MAX).
    self_fence_after: float = 30.0
    # Where `readonly=on` does not stop writes through files opened before it
    # (zfs-fuse), a self-fence whose unmount is refused stops the processes that
    # hold the volume (SIGTERM, then SIGKILL): the fence is not whole before.
    stop_holders: bool = True


@dataclass(frozen=True)
class AgentConfig:
    node: str
    pool_root: str
    mount_root: str = DEFAULT_MOUNT_ROOT
    listen: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    host_key: Path = Path("/etc/zflock/ssh_host_ed25519_key")
    authorized_keys: Path = Path("/etc/zflock/authorized_keys")
    cluster: Path = DEFAULT_CLUSTER_FILE
    # How long a SIGTERM waits for running operations before cancelling them.
    shutdown_grace: float = 20.0
    # Hooks given on the command line (`zflock move --pre-hook ...`) run as
    # root on this node: only when the operator opted in.
    allow_client_hooks: bool = False
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    hooks: HookConfig = field(default_factory=HookConfig)
    volume_hooks: Mapping[str, HookConfig] = field(default_factory=dict)
    deadlines: MoveDeadlines = field(default_factory=MoveDeadlines)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    # The Docker volume plugin (docs/docker.md): on by default, root-only socket.
    docker_plugin: bool = True
    docker_socket: Path = DEFAULT_DOCKER_SOCKET
    # How long a Docker Mount waits for a move before answering (Docker gives up at ~30 s).
    docker_mount_timeout: float = 20.0
    # None: no metrics endpoint (the default of a config built in code; a
    # config file gets MetricsConfig() unless `[metrics] enabled = false`).
    metrics: MetricsConfig | None = None
    source: Path | None = None

    def dataset(self, volume: str) -> str:
        return f"{self.pool_root}/{volume}"

    def mountpoint(self, volume: str) -> str:
        return f"{self.mount_root.rstrip('/')}/{volume}"

    def hooks_for(self, volume: str) -> HookConfig:
        return self.volume_hooks.get(volume, self.hooks)


@dataclass(frozen=True)
class NodeEntry:
    name: str
    address: str
    port: int
    host_key: str  # OpenSSH public key line: "ssh-ed25519 AAAA... [comment]"


@dataclass(frozen=True)
class Inventory:
    nodes: Mapping[str, NodeEntry]
    identity: Path | None = None  # the CLI's private key, if the file names one
    source: Path | None = None

    def node(self, name: str) -> NodeEntry:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise UsageError(f"unknown node {name!r} (inventory has: {known})") from None


# -- parsing helpers ------------------------------------------------------------


class _Reader:
    """Typed access to one TOML table that reports errors as file: key: problem."""

    def __init__(self, path: Path, table: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.table = table
        self.prefix = prefix
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {problem}")

    def get(self, key: str, kind: type, default: Any = ..., *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required or default is ...:
                raise self.error(key, "missing (required)")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    def argv(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(a, str) for a in value):
            raise self.error(key, "expected a list of strings (an argv, not a shell string)")
        return tuple(value)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except PermissionError:
        raise ConfigError(f"{what} {path} is not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def _port(reader: _Reader, key: str = "port") -> int:
    port = reader.get(key, int, DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise reader.error(key, f"port {port} out of range 1-65535")
    return port


def _address(reader: _Reader, key: str, default: Any = ...) -> str:
    value = reader.get(key, str, default)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        # A DNS name is fine for an inventory; only refuse what cannot be one.
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
            raise reader.error(key, f"{value!r} is neither an IP address nor a host name") from None
    return value


def _hooks(path: Path, table: Mapping[str, Any], prefix: str) -> HookConfig:
    r = _Reader(path, table, prefix)
    hooks = HookConfig(
        pre_cutover=r.argv("pre_cutover"),
        post_cutover=r.argv("post_cutover"),
        rollback=r.argv("rollback"),
        timeout=r.get("timeout", float, 60.0),
    )
    if hooks.timeout <= 0:
        raise r.error("timeout", "must be positive")
    r.finish()
    return hooks


def _metrics(path: Path, table: Mapping[str, Any]) -> MetricsConfig | None:
    r = _Reader(path, table, "metrics.")
    enabled = r.get("enabled", bool, True)
    listen = r.get("listen", str, f"127.0.0.1:{DEFAULT_METRICS_PORT}")
    host, sep, port_text = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:9574
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise r.error("listen", f'{listen!r} is not ADDRESS:PORT (e.g. "127.0.0.1:9574")')
    _address(_Reader(path, {"listen": host}, "metrics."), "listen")
    r.finish()
    return MetricsConfig(address=host, port=int(port_text)) if enabled else None


def _deadlines(path: Path, table: Mapping[str, Any]) -> MoveDeadlines:
    r = _Reader(path, table, "deadlines.")
    defaults = MoveDeadlines()
    values: dict[str, float] = {}
    for key in MoveDeadlines.__dataclass_fields__:
        value = r.get(key, float, getattr(defaults, key))
        if not 0 < value <= DEADLINE_MAX:
            raise r.error(key, f"must be in (0, {DEADLINE_MAX:g}] seconds, got {value:g}")
        values[key] = value
    r.finish()
    return MoveDeadlines(**values)


def _replication(path: Path, table: Mapping[str, Any]) -> ReplicationConfig:
    r = _Reader(path, table, "replication.")
    config = ReplicationConfig(
        every=r.get("every", str, ReplicationConfig.every),
        keep=r.get("keep", str, ReplicationConfig.keep),
        keep_replica=r.get("keep_replica", str, ReplicationConfig.keep_replica),
        max_streams=r.get("max_streams", int, ReplicationConfig.max_streams),
    )
    if not 1 <= config.max_streams <= 64:
        raise r.error("max_streams", f"{config.max_streams} not in 1-64")
    r.finish()
    return config


def _failover(path: Path, table: Mapping[str, Any]) -> FailoverConfig:
    r = _Reader(path, table, "failover.")
    after = r.get("self_fence_after", float, FailoverConfig.self_fence_after)
    if not SELF_FENCE_MIN <= after <= SELF_FENCE_MAX:
        raise r.error(
            "self_fence_after", f"must be {SELF_FENCE_MIN:g}-{SELF_FENCE_MAX:g} s, got {after:g}"
        )
    stop_holders = r.get("stop_holders", bool, FailoverConfig.stop_holders)
    r.finish()
    return FailoverConfig(self_fence_after=after, stop_holders=stop_holders)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base.parent / p)


def load_agent_config(path: Path = DEFAULT_AGENT_CONFIG) -> AgentConfig:
    # Imported here: cluster/ sits beside zfs/ and only needs its validators.
    from zflock.zfs.names import validate_component, validate_dataset_name

    data = _load_toml(path, "agent config")
    r = _Reader(path, data)
    node = r.get("node", str, required=True)
    try:
        validate_node_name(node)
    except UsageError as exc:
        raise r.error("node", str(exc)) from None
    pool_root = r.get("pool_root", str, required=True)
    try:
        validate_dataset_name(pool_root)
    except UsageError as exc:
        raise r.error("pool_root", str(exc)) from None
    mount_root = r.get("mount_root", str, DEFAULT_MOUNT_ROOT)
    if not mount_root.startswith("/") or ".." in mount_root.split("/"):
        raise r.error("mount_root", f"{mount_root!r} must be an absolute path without '..'")
    hooks_table = r.get("hooks", dict, {})
    volumes_table = r.get("volumes", dict, {})
    volume_hooks: dict[str, HookConfig] = {}
    for volume, table in volumes_table.items():
        try:
            validate_component(volume, "volume name")
        except UsageError as exc:
            raise r.error(f"volumes.{volume}", str(exc)) from None
        if not isinstance(table, dict):
            raise r.error(f"volumes.{volume}", "expected a table")
        vr = _Reader(path, table, f"volumes.{volume}.")
        volume_hooks[volume] = _hooks(path, vr.get("hooks", dict, {}), f"volumes.{volume}.hooks.")
        vr.finish()
    grace = r.get("shutdown_grace", float, 20.0)
    config = AgentConfig(
        node=node,
        pool_root=pool_root,
        mount_root=mount_root,
        listen=_address(r, "listen", "0.0.0.0"),
        port=_port(r),
        host_key=_resolve(path, r.get("host_key", str, "/etc/zflock/ssh_host_ed25519_key")),
        authorized_keys=_resolve(
            path, r.get("authorized_keys", str, "/etc/zflock/authorized_keys")
        ),
        cluster=_resolve(path, r.get("cluster", str, str(DEFAULT_CLUSTER_FILE))),
        shutdown_grace=grace,
        allow_client_hooks=r.get("allow_client_hooks", bool, False),
        replication=_replication(path, r.get("replication", dict, {})),
        hooks=_hooks(path, hooks_table, "hooks."),
        volume_hooks=volume_hooks,
        deadlines=_deadlines(path, r.get("deadlines", dict, {})),
        failover=_failover(path, r.get("failover", dict, {})),
        metrics=_metrics(path, r.get("metrics", dict, {})),
        docker_plugin=r.get("docker_plugin", bool, True),
        docker_socket=_resolve(path, r.get("docker_socket", str, str(DEFAULT_DOCKER_SOCKET))),
        docker_mount_timeout=r.get("docker_mount_timeout", float, 20.0),
        source=path,
    )
    if not 1 <= config.docker_mount_timeout <= 25:
        raise r.error("docker_mount_timeout", "must be 1-25 s (Docker gives up after about 30 s)")
    r.finish()
    return config


def load_inventory(path: Path) -> Inventory:
    data = _load_toml(path, "cluster inventory")
    r = _Reader(path, data)
    identity = r.get("identity", str, None)
    nodes_table = r.get("nodes", dict, required=True)
    nodes: dict[str, NodeEntry] = {}
    for name, table in nodes_table.items():
        try:
            validate_node_name(name)
        except UsageError as exc:
            raise r.error(f"nodes.{name}", str(exc)) from None
        if not isinstance(table, dict):
            raise r.error(f"nodes.{name}", "expected a table")
        nr = _Reader(path, table, f"nodes.{name}.")
        host_key = nr.get("host_key", str, required=True)
        if not _PUBLIC_KEY.fullmatch(host_key):
            raise nr.error("host_key", "expected an OpenSSH public key ('ssh-ed25519 AAAA...')")
        nodes[name] = NodeEntry(
            name=name, address=_address(nr, "address"), port=_port(nr), host_key=host_key
        )
        nr.finish()
    if not nodes:
        raise r.error("nodes", "no nodes defined")
    r.finish()
    return Inventory(
        nodes=nodes,
        identity=_resolve(path, identity) if identity else None,
        source=path,
    )


def inventory_path(explicit: Path | None) -> Path:
    """--cluster FILE, then $ZFLOCK_CLUSTER, then the default path."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CLUSTER_ENV)
    return Path(env) if env else DEFAULT_CLUSTER_FILE
