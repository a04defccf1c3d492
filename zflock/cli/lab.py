"""`zflock lab ...`: the local multi-node lab (network namespaces + zfs-fuse, needs root)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from zflock.cli.app import app
from zflock.lab.plan import DEFAULT_LAB_NAME, parse_size, validate_lab_name

lab_app = typer.Typer(
    help="A local multi-node ZFS cluster in network namespaces (needs root).",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")

NAME_HELP = "Lab name: 1-10 characters of a-z, 0-9, '-' (env ZFLOCK_LAB_NAME)."


def _name_option() -> Any:
    return typer.Option(DEFAULT_LAB_NAME, "--name", envvar="ZFLOCK_LAB_NAME", help=NAME_HELP)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@lab_app.command("up")
def up_cmd(
    nodes: int = typer.Option(3, "--nodes", "-n", help="Number of nodes (1-16)."),
    name: str = _name_option(),
    pool_size: str = typer.Option(
        "1G", "--pool-size", help="Size of each node's sparse pool file, e.g. 256M, 1G."
    ),
) -> None:
    """Bring a lab up (or show it if it is already up)."""
    from zflock.lab import find_state, up

    validate_lab_name(name)
    size = parse_size(pool_size)
    already = find_state(name)
    started = time.monotonic()
    state = up(
        name,
        nodes,
        pool_size=size,
        progress=lambda line: typer.echo(f"lab {name}: {line}", err=True),
    )
    elapsed = time.monotonic() - started
    if already is not None:
        typer.echo(f"lab {name!r} is already up.")
    else:
        typer.echo(f"lab {name!r} is up in {elapsed:.1f} s.")
    _print_usage(state)


def _print_usage(state: Any) -> None:
    from zflock.lab import LabState

    assert isinstance(state, LabState)
    flag = "" if state.name == DEFAULT_LAB_NAME else f" --name {state.name}"
    first = next(iter(state.nodes))
    pub_first = state.nodes[first].address
    lines = [
        f"  subnet {state.subnet}, host {state.host_address} on bridge {state.bridge}",
        f"  pool {state.pool} on every node, dataset {state.pool_root} "
        f"mounted at {state.mount_root} inside the node",
    ]
    for node in state.nodes.values():
        lines.append(f"  {node.name:<7} {node.address:<15} netns {node.netns}")
    lines += [
        "",
        f"run a command on a node:  zflock lab exec{flag} {first} -- zpool list",
        f"log in with ssh:          ssh -F {state.ssh_config} {first}",
        f"                      or  ssh -i {state.operator_key} "
        f"-o UserKnownHostsFile={state.known_hosts} root@{pub_first}",
        f"status:                   zflock lab status{flag}",
        f"take it down:             zflock lab down{flag}",
        f"state file:               {state.state_file}",
    ]
    # Plain lines, never wrapped: operators copy these commands.
    for line in lines:
        typer.echo(line)


@lab_app.command("status")
def status_cmd(
    name: str = _name_option(),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show the lab's nodes, their processes and pools."""
    from zflock.lab import inspect, load_state

    state = load_state(name)
    health = inspect(state)
    if as_json:
        typer.echo(json.dumps(_status_json(state, health), indent=2))
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
                alive = node.processes[role]
                cells.append(f"{node.pids[role]} {'up' if alive else 'DOWN'}")
        if node.pool is not None:
            cells += [node.pool.health, _human(node.pool.free)]
        else:
            cells += [node.pool_error or "-", "-"]
        table.add_row(*cells)
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=200)  # a pipe: do not truncate cells
    out.print(table)
    if health.problems:
        for problem in health.problems:
            out.print(f"problem: {problem}", markup=False)
        raise typer.Exit(1)


def _status_json(state: Any, health: Any) -> dict[str, Any]:
    data = state.to_json()
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


@lab_app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def exec_cmd(
    node: Annotated[str, typer.Argument(help="Node name, e.g. node2.")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --).")],
    name: str = _name_option(),
) -> None:
    """Run COMMAND inside NODE (its network and mount namespace); exits with its status."""
    from zflock.lab import load_state, node_prefix

    state = load_state(name)
    argv = [*node_prefix(state, node), *command]
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process: stdin/stdout/stderr, signals and the exit status
    # are the command's own (nsenter execs it too).
    os.execvp(argv[0], argv)


@lab_app.command("down")
def down_cmd(name: str = _name_option()) -> None:
    """Take the lab down: stop its processes, remove namespaces, links, pools, files."""
    from zflock.lab import down

    if down(name):
        typer.echo(f"lab {name!r} is down; nothing of it is left.")
    else:
        typer.echo(f"lab {name!r} is not up; nothing to do.")
