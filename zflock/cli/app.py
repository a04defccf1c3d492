"""The `zflock` command: one click group, commands registered per concern.

Every command module registers itself on `app` (a click group); this
module only owns the top level: --version, --help, and turning errors into
one line on stderr with the documented exit codes:

    0  success
    1  an operation failed (ZFS, network, a node refused)
    2  bad usage (invalid name, unknown node, malformed file)
"""

from __future__ import annotations

import importlib
import sys

import click

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


# The module that defines each command: `zflock ls` imports the CLI's volume
# module only, not the agent, the lab or failover (start-up time is most of a
# quick command's time). A command missing here still works: then every
# module is imported, as _register() does (tests/unit/test_cli_lazy.py checks
# that the table is complete).
COMMANDS = {
    "agent": "agent",
    "failover": "failover",
    "lab": "lab",
    "move": "move",
    "nodes": "nodes",
    "rejoin": "rejoin",
    "replicate": "replicate",
    "status": "replicate",
    "ls": "volumes",
    "create": "volumes",
    "destroy": "volumes",
    "snapshot": "volumes",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()  # --help lists every command
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module = COMMANDS.get(cmd_name)
            if module is not None:
                importlib.import_module(f"zflock.cli.{module}")
            if cmd_name not in self.commands:
                _register()
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="zflock", message="%(prog)s %(version)s")
def app() -> None:
    pass


def _say(line: str) -> None:
    """One line on stderr, as given. Plain click, not rich: this module is loaded by
    every command, the agent among them (`zflock agent`), and rich alone is ~2 MB of
    the agent's resident memory (docs/benchmarks.md, "Control operations at scale")."""
    click.echo(line, err=True)


def _register() -> None:
    # Imported here so each module can `from zflock.cli.app import app`.
    from zflock.cli import agent, failover, lab, move, nodes, rejoin, replicate, volumes  # noqa: F401


def main() -> None:
    try:
        # standalone_mode=False: click hands usage errors to us, so that every
        # error is one line on stderr (click's own format spans four).
        code = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else HELP)
        sys.exit(0)
    except click.exceptions.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _say(f"zflock: error: {exc.format_message()}{where}")
        sys.exit(2)
    except click.exceptions.Abort:
        _say("zflock: aborted")
        sys.exit(1)
    except UsageError as exc:
        _say(f"zflock: error: {exc}")
        sys.exit(2)
    except ZflockError as exc:
        _say(f"zflock: error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        _say("zflock: interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
