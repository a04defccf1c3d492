"""Small helpers for code that adds its own long-lived processes to lab nodes."""

from __future__ import annotations

from zflock.lab import procs
from zflock.lab.state import LabState


def record_process(state: LabState, node: str, role: str, pid: int) -> None:
    """Record a process started inside `node` under `role` (e.g. "agent").

    `lab down` stops it (SIGTERM, then SIGKILL) before exporting the pool,
    `lab status` shows whether it is alive. The caller saves the state
    (`save_state(state)`) — do it under the same conditions you started it.
    """
    if role == "zfs-fuse":
        raise ValueError("the zfs-fuse role is the lab's own")
    state.node(node).processes[role] = procs.record(pid)
