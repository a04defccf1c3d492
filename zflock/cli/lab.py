"""`zflock lab ...`: the local multi-node lab (to be filled in)."""

from __future__ import annotations

import typer

from zflock.cli.app import app

lab_app = typer.Typer(help="A local multi-node ZFS cluster in network namespaces (needs root).")
app.add_typer(lab_app, name="lab")
