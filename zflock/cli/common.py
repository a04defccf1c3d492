"""What every cluster command shares: options, the cluster connection, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from zflock.cli.views import VolumeView, group_volumes
from zflock.cluster.config import Inventory, inventory_path, load_inventory
from zflock.errors import UsageError
from zflock.rpc import codec
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster, NodeResult
from zflock.rpc.openssh import OpenSSHIdentity, openssh_identity

if TYPE_CHECKING:
    import asyncssh

T = TypeVar("T")

F = TypeVar("F", bound=Callable[..., Any])


def cluster_options(f: F) -> F:
    """--cluster, --identity, --json and --timeout, shared by every cluster command."""
    options = [
        click.option(
            "--cluster",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Cluster inventory (TOML). Default: $ZFLOCK_CLUSTER, "
            "then /etc/zflock/cluster.toml.",
        ),
        click.option(
            "--identity",
            "-i",
            type=click.Path(dir_okay=False, path_type=Path),
            help="SSH private key to authenticate to the agents. "
            "Default: the inventory's identity.",
        ),
        click.option("--json", "json_out", is_flag=True, help="Print JSON instead of a table."),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds to wait for each node to answer.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def load_cluster(cluster: Path | None, identity: Path | None, timeout: float = 10.0) -> Cluster:
    inventory: Inventory = load_inventory(inventory_path(cluster))
    key_path = identity or inventory.identity
    if key_path is None:
        raise UsageError(
            f"no identity key: pass --identity or set `identity` in {inventory.source}"
        )
    return Cluster(inventory, client_key(key_path), timeout=timeout)


def client_key(path: Path) -> asyncssh.SSHKey | OpenSSHIdentity:
    """How the CLI reaches the agents: through `ssh` (a quick command is mostly start-up,
    and ssh starts in milliseconds where importing asyncssh takes 0.2 s) unless
    $ZFLOCK_SSH says `asyncssh`, or ssh is missing or would not use the key."""
    found = openssh_identity(path)
    if isinstance(found, OpenSSHIdentity):
        return found
    from zflock.rpc.client import ClientIdentity  # loads asyncssh

    return ClientIdentity(path).load()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def to_jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, str | int | float):
        return obj  # most leaves: no exception raised and caught for each
    if isinstance(obj, list | tuple):
        return [to_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    try:
        return codec.encode(obj)
    except TypeError:
        return obj


def warn(message: str) -> None:
    err_console.print(f"zflock: warning: {message}", markup=False)


async def collect_copies(
    c: Cluster, names: list[str], nodes: list[str] | None = None
) -> list[NodeResult]:
    """Every node's (or `nodes`') copies of the volumes `names` (all volumes when empty)."""
    return await c.call_all("list_volumes", m.ListVolumes(names=names), nodes)


def views_of(results: list[NodeResult]) -> tuple[list[VolumeView], list[NodeResult]]:
    """The volumes the nodes' answers describe, and the nodes that did not answer."""
    copies: list[m.VolumeInfo] = []
    for r in results:
        if r.ok:
            copies.extend(r.value.volumes)
    return group_volumes(copies), [r for r in results if not r.ok]
