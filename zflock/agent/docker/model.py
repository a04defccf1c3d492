"""The Docker plugin's decisions, pure: names, options, mount holders, what a volume looks like.

Docker's legacy volume plugin protocol (docs/docker.md) is JSON over HTTP;
everything it sends is untrusted input and is checked here before any use.
Errors go back to Docker as `{"Err": "one line"}`, which `docker` prints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zflock.cluster.config import validate_node_name
from zflock.cluster.ownership import ROLE_PRIMARY
from zflock.cluster.view import VolumeView, cluster_view
from zflock.errors import UsageError, ZflockError
from zflock.replication.policy import parse_every
from zflock.rpc.messages import VolumeInfo
from zflock.units import parse_size
from zflock.zfs import validate_component

# On the volume, like every other truth zflock keeps (docs/docker.md, "Mount counts").
PROP_DOCKER_MOUNTS = "zflock:docker-mounts"
OPTIONS = ("size", "replicas", "every")
# Docker's mount IDs are 64 hex digits; refuse anything that could break the property.
_MAX_ID = 128


class DockerError(ZflockError):
    """An answer for Docker: `{"Err": message}`."""


@dataclass(frozen=True)
class CreateOptions:
    quota: int | None = None
    replicas: tuple[str, ...] = ()
    every: str | None = None  # an interval as `zflock replicate --every` takes it ("30s")


def volume_name(value: object) -> str:
    """A Docker volume name that is a valid zflock volume name, or a DockerError."""
    if not isinstance(value, str):
        raise DockerError("volume name missing or not a string")
    try:
        return validate_component(value, "volume name")
    except UsageError as exc:
        raise DockerError(str(exc)) from None


def caller_id(value: object) -> str:
    """The ID Docker gives a Mount/Unmount caller: printable, no separators, bounded."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise DockerError("mount ID missing or malformed")
    if not value.isascii() or not value.replace("-", "").replace("_", "").isalnum():
        raise DockerError(f"mount ID {value[:20]!r} has characters other than [A-Za-z0-9_-]")
    return value


def parse_options(opts: object, here: str) -> CreateOptions:
    """`docker volume create -o KEY=VALUE`: size, replicas (node,node), every (e.g. 30s)."""
    if opts is None:
        return CreateOptions()
    if not isinstance(opts, Mapping):
        raise DockerError("Opts must be an object of strings")
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise DockerError(f"unknown option {unknown[0]!r} (zflock takes {', '.join(OPTIONS)})")
    if not all(isinstance(v, str) for v in opts.values()):
        raise DockerError("option values must be strings")
    try:
        quota = parse_size(opts["size"], "size") if "size" in opts else None
        replicas = tuple(
            validate_node_name(n.strip()) for n in opts.get("replicas", "").split(",") if n.strip()
        )
    except UsageError as exc:
        raise DockerError(str(exc)) from None
    if here in replicas:
        raise DockerError(f"replicas: {here} will hold the primary; name other nodes")
    if len(set(replicas)) != len(replicas):
        raise DockerError("replicas: a node is named twice")
    every = opts.get("every")
    if every is not None and not replicas:
        raise DockerError("every needs replicas=NODE[,NODE] to know where to replicate")
    if every is not None:
        try:
            parse_every(every)  # the primary checks it again: the same rule as the CLI's
        except UsageError as exc:
            raise DockerError(str(exc)) from None
    return CreateOptions(quota=quota, replicas=replicas, every=every)


# -- who holds a volume mounted ---------------------------------------------------------


def parse_holders(value: str | None, node: str) -> list[str]:
    """This node's mount IDs from the property (`node/ID,node/ID`).

    Entries are qualified by node because the property travels with the
    volume's snapshots (`zfs send -p`): another node's IDs are not ours.
    """
    holders = []
    for entry in (value or "").split(","):
        owner, _, ident = entry.strip().partition("/")
        if owner == node and ident:
            holders.append(ident)
    return holders


def format_holders(holders: list[str], node: str) -> str:
    return ",".join(f"{node}/{h}" for h in holders)


def with_holder(holders: list[str], ident: str) -> list[str]:
    """Docker may repeat a Mount for the same ID (it retries): count it once."""
    return holders if ident in holders else [*holders, ident]


def without_holder(holders: list[str], ident: str) -> list[str]:
    return [h for h in holders if h != ident]


def in_use_error(name: str, node: str, holders: list[str]) -> DockerError:
    ids = ", ".join(h[:12] for h in holders)
    return DockerError(
        f"volume {name} is in use on node {node} by container mount {ids}; "
        f"stop that container first"
    )


# -- the cluster's copies of one name ---------------------------------------------------


@dataclass(frozen=True)
class Located:
    """Where a volume named N lives, by the rule of `zflock ls` (docs/design.md, epochs)."""

    name: str
    primary: str | None
    epoch: int
    copies: list[VolumeInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def locate(copies: list[VolumeInfo]) -> dict[str, Located]:
    """Group copies by name; the primary is decided by the cluster view's rule
    (zflock.cluster.view: the one primary copy at the highest epoch).

    Two volume ids under one name are two volumes: Docker can only name one, so
    the name is reported as a problem and gets no primary.
    """
    by_name: dict[str, list[VolumeView[VolumeInfo]]] = defaultdict(list)
    for v in cluster_view(copies):
        by_name[v.name].append(v)
    found = {}
    for name, views in sorted(by_name.items()):
        if len(views) > 1:
            group = sorted(
                (c for v in views for c in v.copies),
                key=lambda c: (c.role != ROLE_PRIMARY, -c.epoch, c.node),
            )
            epoch = max(v.epoch for v in views)
            found[name] = Located(
                name, None, epoch, group, [f"two different volumes are named {name}"]
            )
            continue
        [v] = views
        found[name] = Located(name, v.primary, v.epoch, list(v.copies), list(v.problems))
    return found


def status(where: Located, mounts_here: list[str]) -> dict[str, Any]:
    """`docker volume inspect`'s Status: zflock's view of the volume."""
    primary = next((c for c in where.copies if c.node == where.primary), None)
    newest = primary.latest_snapshot_time if primary else None

    def lag(copy: VolumeInfo) -> float | None:
        # How far the replica's newest snapshot is behind the primary's.
        if newest is None or copy.latest_snapshot_time is None:
            return None
        return float(max(0, newest - copy.latest_snapshot_time))

    return {
        "primary": where.primary,
        "epoch": where.epoch,
        "replicas": [
            {"node": c.node, "epoch": c.epoch, "snapshot": c.latest_snapshot, "lag_s": lag(c)}
            for c in where.copies
            if c.node != where.primary
        ],
        "mounts_here": len(mounts_here),
        "problems": where.problems,
    }
