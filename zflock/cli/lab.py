"""`zflock lab ...`: the local multi-node lab (network namespaces + zfs-fuse, needs root)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from zflock.cli.app import app
from zflock.lab.plan import (
    DEFAULT_LAB_NAME,
    MAX_NODES,
    parse_size,
    validate_lab_name,
    validate_node_count,
)


@app.group("lab")
def lab_group() -> None:
    """A local multi-node ZFS cluster in network namespaces (needs root).

    Each node is a network namespace with its own address on a lab bridge
    (the host is a client of it), a private mount namespace with its own
    zfs-fuse daemon and pool `tank` in a sparse file, and sshd. The lab's
    state (addresses, PIDs, paths) is kept in /var/lib/zflock-lab/NAME.json,
    so any shell can use it and take it down.
    """


name_option = click.option(
    "--name",
    default=DEFAULT_LAB_NAME,
    show_default=True,
    envvar="ZFLOCK_LAB_NAME",
    help="Lab name: 1-10 characters of a-z, 0-9, '-' ($ZFLOCK_LAB_NAME).",
)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@lab_group.command("up")
@click.option(
    "--nodes",
    "-n",
    type=int,
    default=3,
    show_default=True,
    help=f"Number of nodes (1-{MAX_NODES}).",
)
@name_option
@click.option(
    "--pool-size",
    default="1G",
    show_default=True,
    help="Size of each node's sparse pool file, e.g. 256M, 1G.",
)
@click.option(
    "--arc-size",
    default=None,
    help="Cap of each node's zfs-fuse ARC, e.g. 512M, 1G (zfs-fuse's --max-arc-size). "
    "Default: zfs-fuse's own, which caches little of a pool with hundreds of "
    "volumes and thousands of snapshots. zfs-fuse labs only.",
)
def up_command(nodes: int, name: str, pool_size: str, arc_size: str | None) -> None:
    """Bring a lab up, or show how to use it if it is already up.

    Fails with one line if this machine lacks root, zfs-fuse, sshd or
    namespace support, before creating anything. A lab that is partly up
    (a node's process died, or `up` was interrupted) is not repaired: take it
    down with `zflock lab down` and bring it up again.
    """
    from zflock.lab import find_state, up
    from zflock.lab.preflight import preflight

    # Bad input first (exit 2), then what the machine lacks (exit 1), and
    # only then anything that touches the lab's files.
    validate_lab_name(name)
    validate_node_count(nodes)
    size = parse_size(pool_size)
    arc = None
    if arc_size is not None:
        from zflock.lab.backend import lab_backend
        from zflock.lab.lab_up import validate_arc_size
        from zflock.units import parse_size as parse_amount

        arc = parse_amount(arc_size, "ARC size")
        validate_arc_size(arc, lab_backend(None), arc_size)
    preflight()
    already = find_state(name)
    started = time.monotonic()
    state = up(
        name,
        nodes,
        pool_size=size,
        arc_size=arc,
        progress=lambda line: click.echo(f"lab {name}: {line}", err=True),
    )
    if already is not None:
        click.echo(f"lab '{name}' is already up.")
    else:
        click.echo(f"lab '{name}' is up in {time.monotonic() - started:.1f} s.")
    _print_usage(state)


def _print_usage(state: Any) -> None:
    flag = "" if state.name == DEFAULT_LAB_NAME else f" --name {state.name}"
    first = next(iter(state.nodes.values()))
    lines = [
        f"  subnet {state.subnet}, host {state.host_address} on bridge {state.bridge}",
        f"  pool {state.pool} on every node; dataset {state.pool_root} "
        f"mounted at {state.mount_root} inside the node",
    ]
    for node in state.nodes.values():
        lines.append(f"  {node.name:<7} {node.address:<15} netns {node.netns}")
    from zflock.lab.agents import cluster_file

    lines += [
        "",
        "use zflock against the lab (agents run on every node):",
        f"  export ZFLOCK_CLUSTER={cluster_file(state)}",
        "  zflock nodes",
        f"  zflock create web --on {first.name}",
        "",
        f"run a command on a node:  zflock lab exec{flag} {first.name} -- zpool list",
        f"log in with ssh:          ssh -F {state.ssh_config} {first.name}",
        f"                      or  ssh -i {state.operator_key} "
        f"-o UserKnownHostsFile={state.known_hosts} root@{first.address}",
        f"status:                   zflock lab status{flag}",
        f"take it down:             zflock lab down{flag}",
        f"state file:               {state.state_file}",
    ]
    # Plain lines, never wrapped: operators copy these commands.
    for line in lines:
        click.echo(line)


@lab_group.command("demo")
@name_option
def demo_command(name: str) -> None:
    """Bring a 3-node lab up (if needed) and move a volume under a live writer.

    Creates `web` on node1 with data, starts a writer that appends fsynced,
    numbered records to it, keeps a replica on node2, then moves `web` to
    node2 with hooks that stop the writer on node1 and start it on node2,
    prints the downtime and checks that every acknowledged write arrived.
    Run it again to move the volume back. Every step is an ordinary zflock
    command, printed before it runs; the lab stays up afterwards.
    """
    from zflock.lab import up
    from zflock.lab.demo import run_demo

    validate_lab_name(name)
    state = up(name, 3, progress=lambda line: click.echo(f"lab {name}: {line}", err=True))
    run_demo(state, click.echo)


@lab_group.command("status")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(name: str, as_json: bool) -> None:
    """Show the lab's nodes, their processes and pools (exit 1 if anything is down)."""
    from zflock.lab import inspect, load_state

    state = load_state(name)
    health = inspect(state)
    if as_json:
        click.echo(json.dumps(_status_json(state, health), indent=2))
        return
    roles: list[str] = []
    for node in health.nodes:
        roles += [r for r in node.processes if r not in roles]
    table = Table(title=f"lab {state.name} ({state.subnet})", title_justify="left")
    for col in ["node", "netns", "address", *roles, "pool", "free"]:
        table.add_column(col)
    for node in health.nodes:
        cells = [node.name, node.netns + ("" if node.netns_present else " (missing)"), node.address]
        for role in roles:
            if role not in node.processes:
                cells.append("-")
            else:
                cells.append(f"{node.pids[role]} {'up' if node.processes[role] else 'DOWN'}")
        if node.pool is not None:
            cells += [node.pool.health, _human(node.pool.free)]
        else:
            cells += [node.pool_error or "-", "-"]
        table.add_row(*cells)
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=200)  # a pipe: do not truncate cells
    out.print(table)
    for problem in health.problems:
        click.echo(f"problem: {problem}")
    if health.problems:
        raise click.exceptions.Exit(1)


def _status_json(state: Any, health: Any) -> dict[str, Any]:
    data: dict[str, Any] = state.to_json()
    data["healthy"] = health.healthy
    data["problems"] = health.problems
    for node in health.nodes:
        entry = data["nodes"][node.name]
        entry["netns_present"] = node.netns_present
        for role, alive in node.processes.items():
            entry["processes"][role]["alive"] = alive
        entry["pool_info"] = (
            {
                "name": node.pool.name,
                "size": node.pool.size,
                "allocated": node.pool.allocated,
                "free": node.pool.free,
                "health": node.pool.health,
            }
            if node.pool is not None
            else None
        )
        entry["pool_error"] = node.pool_error
    return data


@lab_group.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@name_option
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(name: str, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE (its network and mount namespace).

    Usage: zflock lab exec [--name LAB] NODE -- COMMAND [ARGS...]. The
    command's arguments are passed as they are (no shell); stdin, stdout and
    stderr are the command's, and so is the exit status.
    """
    from zflock.errors import UsageError
    from zflock.lab import load_state, node_prefix

    # With options parsing stopped at NODE, click hands the `--` through.
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no command given: zflock lab exec NODE -- COMMAND [ARGS...]")
    state = load_state(name)
    argv = [*node_prefix(state, node), *command]
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process (nsenter then execs the command too): signals and
    # the exit status are the command's own.
    os.execvp(argv[0], argv)


@lab_group.command("down")
@name_option
def down_command(name: str) -> None:
    """Take the lab down: stop its processes, remove namespaces, links, pools and files.

    Everything is found through the lab's state file, by recorded PID and
    name. Running it again, or for a lab that is not up, does nothing.
    """
    from zflock.lab import down

    if down(name):
        click.echo(f"lab '{name}' is down; nothing of it is left.")
    else:
        click.echo(f"lab '{name}' is not up; nothing to do.")
