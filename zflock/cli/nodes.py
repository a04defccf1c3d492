"""`zflock nodes`: every node of the inventory, its agent and its ZFS."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from zflock.cli.app import app
from zflock.cli.common import (
    cluster_options,
    console,
    load_cluster,
    print_json,
    run,
)
from zflock.rpc import codec
from zflock.rpc.messages import Empty
from zflock.units import format_bytes

# Short names for the table (the --json output has the full ones).
SHORT = {
    "resume_tokens": "resume",
    "receive_unmounted": "recv-u",
    "send_estimates": "estimates",
    "createtxg": "txg",
}


@app.command("nodes")
@cluster_options
def nodes_command(
    cluster: Path | None, identity: Path | None, json_out: bool, timeout: float
) -> None:
    """List the cluster's nodes with their agent's health and ZFS capabilities.

    Exit code 1 if any node is down (the others are still listed).

    --json prints {"nodes": [...]}, one object per node with: node, address,
    port, status ("up" or "down"), error (null when up), and when up:
    agent_version, protocol, zfs_implementation, zfs_version, capabilities
    (resume_tokens, receive_unmounted, holds, bookmarks, send_estimates,
    createtxg: booleans), pool_root, mount_root, pool_size, pool_free
    (bytes), uptime_s, running_jobs.
    """
    c = load_cluster(cluster, identity, timeout)
    results = run(c.call_all("node_info", Empty()))
    rows: list[dict[str, Any]] = []
    for r in results:
        entry = c.inventory.nodes[r.node]
        row: dict[str, Any] = {"node": r.node, "address": entry.address, "port": entry.port}
        if r.ok:
            info = codec.encode(r.value)
            info.pop("node")
            row |= {"status": "up", "error": None, **info}
        else:
            row |= {"status": "down", "error": str(r.error)}
        rows.append(row)
    if json_out:
        print_json({"nodes": rows})
    else:
        table = Table(box=None, pad_edge=False)
        for col in ("NODE", "ADDRESS", "STATUS", "ZFS", "FREE", "FEATURES", "UPTIME"):
            table.add_column(col)
        for row in rows:
            if row["status"] == "up":
                zfs = row["zfs_implementation"] + (
                    f" {row['zfs_version']}" if row["zfs_version"] else ""
                )
                caps = row["capabilities"]
                features = ",".join(SHORT.get(k, k) for k, v in sorted(caps.items()) if v) or "-"
                table.add_row(
                    row["node"],
                    f"{row['address']}:{row['port']}",
                    "up",
                    zfs,
                    format_bytes(row["pool_free"]),
                    features,
                    f"{row['uptime_s']:.0f}s",
                )
            else:
                where = f"{row['address']}:{row['port']}"
                table.add_row(row["node"], where, "DOWN", "", "", "", "")
        console.print(table)
        for row in rows:
            if row["status"] == "down":
                console.print(f"{row['node']}: {row['error']}", markup=False)
    if any(r["status"] == "down" for r in rows):
        sys.exit(1)
