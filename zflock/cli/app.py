"""The `zflock` command: one Typer app, sub-apps registered per concern.

Every command module registers itself on `app` (or adds a sub-app); this
module only owns the top level: --version, --help, and turning errors into
one line on stderr with the documented exit codes:

    0  success
    1  an operation failed (ZFS, network, a node refused)
    2  bad usage (invalid name, unknown node, malformed file)
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from zflock import __version__
from zflock.errors import UsageError, ZflockError

HELP = """\
zflock moves and replicates container data volumes between hosts with ZFS.

Every host runs `zflock agent`, which owns the volumes under its pool root.
`zflock move VOLUME --to NODE` pre-copies a volume with incremental
`zfs send | zfs receive` while its container keeps running, then fences the
source, sends the last small delta and makes the destination the writable
owner: seconds of downtime at worst, whatever the volume's size.

`zflock lab up` builds a local multi-node cluster (network namespaces and
zfs-fuse, no VMs) to try it out.
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zflock {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """zflock: move and replicate container data volumes with ZFS."""


def _register() -> None:
    # Imported here so each module can `from zflock.cli.app import app`.
    from zflock.cli import lab  # noqa: F401


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line and return an Exit to raise."""
    err_console.print(f"zflock: error: {message}", markup=False)
    return typer.Exit(code)


def main() -> None:
    _register()
    try:
        app()
    except UsageError as exc:
        err_console.print(f"zflock: error: {exc}", markup=False)
        sys.exit(2)
    except ZflockError as exc:
        err_console.print(f"zflock: error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("zflock: interrupted", markup=False)
        sys.exit(130)
