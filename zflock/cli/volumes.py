"""`zflock ls | create | destroy | snapshot`: volumes across the cluster."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    collect_copies,
    console,
    load_cluster,
    print_json,
    run,
    to_jsonable,
    views_of,
    warn,
)
from zflock.cli.table import PlainTable
from zflock.cli.views import VolumeView
from zflock.cluster.config import validate_node_name
from zflock.cluster.lease import parse_fenced
from zflock.errors import ZflockError
from zflock.replication.schedule import lag_state, replica_lag
from zflock.rpc import messages as m
from zflock.rpc.cluster import Cluster, NodeResult
from zflock.rpc.schedule_messages import ScheduleInfo
from zflock.units import format_age, format_bytes, parse_duration, parse_size
from zflock.zfs.names import validate_component


def validate_volume(name: str) -> str:
    return validate_component(name, "volume name")


# (primary node, volume, target) -> that link of the primary's scheduler
Links = dict[tuple[str, str, str], ScheduleInfo]


async def collect_schedules(c: Cluster, nodes: list[str] | None) -> Links:
    """What every primary's scheduler says of its links (a node that cannot say: none)."""
    links: Links = {}
    for r in await c.call_all("schedules", m.Empty(), nodes):
        if r.ok:
            for s in r.value.links:
                links[(s.node, s.volume, s.target)] = s
    return links


def replication_of(v: VolumeView, copy: m.VolumeInfo, links: Links, now: float) -> dict[str, Any]:
    """A replica's lag (seconds) and state: ok / behind / failing (with the last error),
    or stale; docs/replication.md says how they are read."""
    p = v.primary_copy
    link = links.get((v.primary or "", v.name, copy.node))
    if v.status(copy.node) == "stale":
        return {"lag_s": None, "state": "stale", "last_error": None, "failures": 0}
    every = None
    if link is not None:
        every = link.every
    elif p is not None and p.policy is not None and p.policy.every:
        every = float(parse_duration(p.policy.every))  # a schedule not (yet) running
    lag = replica_lag(
        now, copy.latest_snapshot_time, p.latest_snapshot_time if p else None, every is not None
    )
    failures = link.failures if link else 0
    return {
        "lag_s": None if lag is None else round(lag, 3),
        "state": lag_state(lag, every, failures),
        "last_error": link.last_error if link else None,
        "failures": failures,
    }


def _replica_text(v: VolumeView, copy: m.VolumeInfo, links: Links, now: float) -> str:
    r = replication_of(v, copy, links, now)
    lag = "no snapshot" if r["lag_s"] is None else f"lag {format_age(r['lag_s'])}"
    text = f"{copy.node}({lag}, {r['state']}"
    if r["last_error"]:
        text += f": {r['last_error']}"
    return text + ")"


def _view_json(v: VolumeView, now: float, links: Links) -> dict[str, Any]:
    def copy(c: m.VolumeInfo) -> dict[str, Any]:
        age = now - c.latest_snapshot_time if c.latest_snapshot_time else None
        replication = None if c.node == v.primary else replication_of(v, c, links, now)
        return {**to_jsonable(c), "latest_snapshot_age_s": age, "replication": replication}

    return {
        "name": v.name,
        "id": v.id,
        "primary": v.primary,
        "epoch": v.epoch,
        "copies": [copy(c) for c in v.copies],
        "problems": v.problems,
    }


def _age(copy: m.VolumeInfo, now: float) -> str:
    """How old the copy's newest snapshot is ("none" without snapshots)."""
    t = copy.latest_snapshot_time
    return format_age(now - t) if t else "none"


def _where(copy: m.VolumeInfo) -> str:
    """The mountpoint, and whether a move has fenced the copy (docs/move.md)."""
    where = copy.mountpoint + ("" if copy.mounted else " (unmounted)")
    if copy.move:
        phase, _, rest = copy.move.partition("/")
        destination = rest.split("/")[1] if rest.count("/") >= 2 else "?"
        where += f" ({phase} for a move to {destination})"
    if (fenced := parse_fenced(copy.fenced)) is not None:  # self-fenced (docs/failover.md)
        where += f" ({fenced.describe()})"
    return where


def _unreachable(failed: list[NodeResult]) -> list[dict[str, str]]:
    return [{"node": r.node, "error": str(r.error)} for r in failed]


def _policy(copy: m.VolumeInfo) -> str:
    """The primary's policy in a few words: 'node2,node3 every 30s'."""
    if copy.policy_error:
        return "damaged"
    if copy.policy is None:
        return "-"
    every = f" every {copy.policy.every}" if copy.policy.every else ""
    return ",".join(copy.policy.targets) + every


@app.command("ls")
@click.argument("volumes", nargs=-1)
@click.option("--node", help="Only ask this node.")
@cluster_options
def ls_command(
    volumes: tuple[str, ...],
    node: str | None,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """List volumes (all, or the VOLUMES named): primary, epoch, replicas, freshness.

    Exit code 1 if a node could not be asked (the rest is still listed).

    --json prints {"volumes": [...], "unreachable": [{"node", "error"}]}.
    Each volume: name, id, primary (node or null), epoch, problems (list of
    strings), copies: one per node with name, node, id, role ("primary" or
    "replica"), epoch, origin, mountpoint, mounted, readonly, used,
    referenced, quota (bytes or null), snapshots (count), latest_snapshot,
    latest_snapshot_time (unix s), latest_snapshot_age_s, move (the
    zflock:move marker of a cutover in progress, or null: docs/move.md),
    stale (a stale copy's "<epoch>/<reason>/<move id>", or null: docs/move.md),
    policy (the replication policy stored on the copy: volume, node, targets,
    every, keep, keep_replica; or null), policy_error (why a damaged policy
    cannot be read, or null), policy_serial (its zflock:policy-serial, or
    null), policy_copy (on a replica, the copy of its primary's policy kept
    for a failover, as stored: never acted upon; or null), replication (null on the primary; on a
    replica: lag_s, how far behind the primary's data its newest snapshot
    is, or null without one; state, "ok", "behind", "failing" or "stale";
    last_error, the primary's last failed run to it, or null; failures in
    a row). REPLICAS shows each as node(lag, state: error).
    """
    names = [validate_volume(v) for v in volumes]
    c = load_cluster(cluster, identity, timeout)
    nodes = [c.inventory.node(validate_node_name(node)).name] if node else None

    async def ask() -> tuple[list[NodeResult], Links]:
        listed, links = await asyncio.gather(
            collect_copies(c, names, nodes), collect_schedules(c, nodes)
        )
        return listed, links

    listed, links = run(ask())
    views, failed = views_of(listed)
    now = time.time()
    if json_out:
        print_json(
            {
                "volumes": [_view_json(v, now, links) for v in views],
                "unreachable": _unreachable(failed),
            }
        )
    else:
        table = PlainTable()  # rich's Table takes seconds for 1000 rows
        columns = ("VOLUME", "PRIMARY", "EPOCH", "USED", "MOUNTPOINT", "REPLICAS", "SNAPSHOT AGE")
        for col in (*columns, "POLICY"):
            table.add_column(col)
        for v in views:
            p = v.primary_copy
            replicas = ", ".join(_replica_text(v, r, links, now) for r in v.replicas)
            table.add_row(
                v.name,
                v.primary or "?",
                str(v.epoch),
                format_bytes(p.used) if p else "-",
                _where(p) if p else "-",
                replicas or "-",
                _age(p, now) if p else "-",
                _policy(p) if p else "-",
            )
        console.print(table, soft_wrap=True)
        for v in views:
            for problem in v.problems:
                warn(f"{v.name}: {problem}")
    for r in failed:
        warn(str(r.error))
    if names and not views and not failed:
        raise ZflockError(f"volume {', '.join(names)} not found on any node")
    if failed:
        sys.exit(1)


async def find_primary(c: Cluster, name: str) -> str:
    """The node holding the writable copy of `name`, or a one-line error why there is none."""
    view = primary_view(name, *views_of(await collect_copies(c, [name], None)))
    assert view.primary is not None
    return view.primary


def primary_view(name: str, views: list[VolumeView], failed: list[NodeResult]) -> VolumeView:
    """The one volume named `name` that has a primary, or a one-line error why there is none."""
    primaries = [v for v in views if v.primary]
    if not primaries:
        _require_all(failed, f"find the primary of {name}")
        if views:
            raise ZflockError(f"volume {name} has no primary: {'; '.join(views[0].problems)}")
        raise ZflockError(f"volume {name} not found on any node")
    if len(primaries) > 1:
        raise ZflockError(f"two different volumes are named {name}; cannot choose")
    return primaries[0]


def _require_all(failed: list[NodeResult], action: str) -> None:
    if failed:
        down = ", ".join(r.node for r in failed)
        raise ZflockError(f"cannot {action}: node(s) {down} unreachable ({failed[0].error})")


@app.command("create")
@click.argument("volume")
@click.option("--on", "on", required=True, help="Node that will own the new volume.")
@click.option("--quota", help="Size limit, e.g. 10G (binary units).")
@cluster_options
def create_command(
    volume: str,
    on: str,
    quota: str | None,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Create a volume on a node, writable and mounted at MOUNT_ROOT/VOLUME.

    The name must be unused on every node: NODE's agent has every node of its
    inventory reserve the name first, so two concurrent creates of one name
    never both succeed (both may fail; retry). A node that cannot be reached
    refuses the create (it might hold a volume of that name).

    --json prints the new copy: name, node, id, role, epoch, origin,
    mountpoint, mounted, readonly, used, referenced, quota, snapshots,
    latest_snapshot, latest_snapshot_time.
    """
    name = validate_volume(volume)
    quota_bytes = parse_size(quota, "quota") if quota is not None else None
    c = load_cluster(cluster, identity, timeout)
    target = c.inventory.node(validate_node_name(on)).name

    # One request, about one name: its cost does not grow with the number of volumes.
    args = m.CreateVolume(name=name, quota=quota_bytes)
    info = run(c.call(target, "create_volume", args))
    if json_out:
        print_json(info)
    else:
        console.print(
            f"created {info.name} on {info.node} at {info.mountpoint} (epoch {info.epoch})",
            markup=False,
        )


@app.command("destroy")
@click.argument("volume")
@click.option("--node", help="Destroy only the copy on this node.")
@click.option(
    "--force",
    is_flag=True,
    help="Also destroy when no primary can be found, or a replica named with --node.",
)
@cluster_options
def destroy_command(
    volume: str,
    node: str | None,
    force: bool,
    cluster: Path | None,
    identity: Path | None,
    json_out: bool,
    timeout: float,
) -> None:
    """Destroy a volume: its primary and every replica, with their snapshots.

    Without --node, all nodes must answer, and the primary is destroyed first
    (if it is busy, nothing else is touched). With --node, only that copy; a
    replica then needs --force. There is no undo.

    --json prints {"destroyed": [{name, node, role, snapshots}]}.
    """
    name = validate_volume(volume)
    c = load_cluster(cluster, identity, timeout)
    only = c.inventory.node(validate_node_name(node)).name if node else None

    async def go() -> list[m.Destroyed]:
        views, failed = views_of(await collect_copies(c, [name], [only] if only else None))
        _require_all(failed, f"destroy {name}")
        copies = [x for v in views for x in v.copies]
        if not copies:
            where = f"on node {only}" if only else "on any node"
            raise ZflockError(f"volume {name} not found {where}")
        if len(views) > 1:
            raise ZflockError(
                f"two different volumes are named {name} (ids {', '.join(v.id for v in views)}); "
                "destroy them one node at a time with --node"
            )
        view = views[0]
        if only is None and view.primary is None and not force:
            raise ZflockError(
                f"no primary of {name} found ({'; '.join(view.problems)}); pass --force to "
                "destroy the remaining copies anyway"
            )
        done = []
        for copy in copies:  # primary first: group_volumes sorts it first
            is_primary = copy.node == view.primary
            args = m.DestroyVolume(name=name, force=force or (only is None and not is_primary))
            done.append(await c.call(copy.node, "destroy_volume", args))
        return done

    destroyed = run(go())
    if json_out:
        print_json({"destroyed": destroyed})
    else:
        for d in destroyed:
            console.print(
                f"destroyed {d.name} on {d.node} ({d.role}, {d.snapshots} snapshots)",
                markup=False,
            )


@app.command("snapshot")
@click.argument("volume")
@cluster_options
def snapshot_command(
    volume: str, cluster: Path | None, identity: Path | None, json_out: bool, timeout: float
) -> None:
    """Take a zflock snapshot of a volume on its primary.

    Snapshots are named zflock-<UTC time>-<sequence>; zflock prunes only
    snapshots named so.

    --json prints: volume, node, snapshot, guid, creation (unix s).
    """
    name = validate_volume(volume)
    c = load_cluster(cluster, identity, timeout)

    async def go() -> m.SnapshotInfo:
        primary = await find_primary(c, name)
        return await c.call(primary, "snapshot_volume", m.SnapshotVolume(name=name))

    info = run(go())
    if json_out:
        print_json(info)
    else:
        console.print(f"snapshot {info.volume}@{info.snapshot} on {info.node}", markup=False)
