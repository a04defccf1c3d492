"""`zflock lab demo`: what an operator would type, run for real in a local lab.

Each step is an ordinary `zflock` command (printed before it runs), against
the lab's inventory, so the demo shows the tool as it is used and doubles as
a smoke test of a fresh checkout.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence

from zflock.errors import ZflockError
from zflock.lab.agents import cluster_file
from zflock.lab.state import LabState

Echo = Callable[[str], None]
VOLUME = "web"

# The demo's writes inside node1: a test-written script, not operator input.
WRITE_DATA = (
    "mkdir -p /zflock/web/site && head -c 64000000 /dev/urandom > /zflock/web/site/blob.bin "
    "&& date -u > /zflock/web/site/index.html"
)
WRITE_MORE = (
    "head -c 8000000 /dev/urandom >> /zflock/web/site/blob.bin "
    "&& date -u >> /zflock/web/site/index.html"
)


class DemoFailed(ZflockError):
    pass


def _zflock(args: Sequence[str], env: dict[str, str], echo: Echo, *, check: bool = True) -> int:
    echo("$ zflock " + " ".join(shlex.quote(a) for a in args))
    # -P: never let the working directory shadow the package (see lab/agents.py).
    done = subprocess.run([sys.executable, "-P", "-m", "zflock", *args], env=env, check=False)
    if check and done.returncode != 0:
        raise DemoFailed(f"`zflock {' '.join(args)}` failed with exit status {done.returncode}")
    return done.returncode


def run_demo(state: LabState, echo: Echo) -> None:
    name_flag = ["--name", state.name]
    env = {**os.environ, "ZFLOCK_CLUSTER": str(cluster_file(state))}
    echo(f"\nThe CLI finds the lab through: export ZFLOCK_CLUSTER={cluster_file(state)}\n")
    _zflock(["nodes"], env, echo)
    exists = (
        subprocess.run(
            [sys.executable, "-P", "-m", "zflock", "ls", VOLUME],
            env=env,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if not exists:
        _zflock(["create", VOLUME, "--on", "node1", "--quota", "512M"], env, echo)
    _zflock(["lab", "exec", *name_flag, "node1", "--", "sh", "-c", WRITE_DATA], env, echo)
    _zflock(["replicate", VOLUME, "--to", "node2"], env, echo)
    _zflock(["lab", "exec", *name_flag, "node1", "--", "sh", "-c", WRITE_MORE], env, echo)
    _zflock(["replicate", VOLUME, "--to", "node2"], env, echo)
    _zflock(["ls"], env, echo)
    down = "zflock lab down" + ("" if state.name == "lab" else f" --name {state.name}")
    echo(
        "\nnode1 holds the writable volume at /zflock/web; node2 a read-only replica, "
        "updated incrementally.\nTry: zflock status, zflock snapshot web, "
        "zflock lab exec node2 -- zfs list -t all\n"
        f"Take the lab down with: {down}"
    )
