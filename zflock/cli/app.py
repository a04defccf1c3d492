"""The `zflock` command: one click group, commands registered per concern.

Every command module registers itself on `app` (a click group); this
module only owns the top level: --version, --help, and turning errors into
one line on stderr with the documented exit codes:

    0  success
    1  an operation failed (ZFS, network, a node refused)
    2  bad usage (invalid name, unknown node, malformed file)
"""

from __future__ import annotations

import sys

import click
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


@click.group(
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="zflock", message="%(prog)s %(version)s")
def app() -> None:
    pass


err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _register() -> None:
    # Imported here so each module can `from zflock.cli.app import app`.
    from zflock.cli import agent, failover, lab, move, nodes, rejoin, replicate, volumes  # noqa: F401


def main() -> None:
    _register()
    try:
        # standalone_mode=False: click hands usage errors to us, so that every
        # error is one line on stderr (click's own format spans four).
        code = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else HELP)
        sys.exit(0)
    except click.exceptions.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        err_console.print(f"zflock: error: {exc.format_message()}{where}", markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("zflock: aborted", markup=False)
        sys.exit(1)
    except UsageError as exc:
        err_console.print(f"zflock: error: {exc}", markup=False)
        sys.exit(2)
    except ZflockError as exc:
        err_console.print(f"zflock: error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("zflock: interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
