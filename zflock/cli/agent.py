"""`zflock agent`: run the node agent in the foreground (systemd runs it so)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from zflock.cli.app import app
from zflock.cluster.config import DEFAULT_AGENT_CONFIG


@app.command("agent")
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_AGENT_CONFIG,
    show_default=True,
    help="The node file (TOML).",
)
@click.option("--debug", is_flag=True, help="Log debug messages.")
def agent_command(config: Path, debug: bool) -> None:
    """Run the node agent: serve the zflock protocol over SSH until SIGTERM.

    Logs go to stderr, one line per event (journald reads them). Exit codes:
    0 after a clean stop, 1 if the node is not ready (missing pool root or
    key, port in use), 2 if the configuration is invalid.
    """
    from zflock.agent.main import run_agent

    sys.exit(run_agent(config, debug=debug))
