"""The local multi-node lab built from network namespaces and zfs-fuse.

Public API (for the CLI and for test fixtures of other layers):

    from zflock import lab
    state = lab.up("mylab", nodes=3, pool_size=256 << 20)   # LabState; idempotent
    lab.node_prefix(state, "node2")   # argv prefix: run a command inside node2
    lab.node_zfs(state, "node2")      # zflock.zfs.Zfs running inside node2
    lab.ssh_argv(state, "node1", "zpool", "list")   # OpenSSH from host or another node
    lab.load_state("mylab")           # from any process/shell; LabNotFound if not up
    lab.record_process(state, "node1", "agent", pid); lab.save_state(state)
    lab.down("mylab")                 # True if something was removed, False if not up

Exports are resolved lazily: `python -m zflock.lab.nodeinit` imports this
package in every node's start-up path and must stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "up": "zflock.lab.lab_up",
    "LabBroken": "zflock.lab.lab_up",
    "LabConflict": "zflock.lab.lab_up",
    "down": "zflock.lab.lab_down",
    "teardown": "zflock.lab.lab_down",
    "LabTeardownIncomplete": "zflock.lab.lab_down",
    "LabState": "zflock.lab.state",
    "NodeState": "zflock.lab.state",
    "LabNotFound": "zflock.lab.state",
    "load_state": "zflock.lab.state",
    "find_state": "zflock.lab.state",
    "all_states": "zflock.lab.state",
    "save_state": "zflock.lab.state",
    "lab_root": "zflock.lab.state",
    "record_process": "zflock.lab.api",
    "node_prefix": "zflock.lab.nodes",
    "node_zfs": "zflock.lab.nodes",
    "ssh_argv": "zflock.lab.nodes",
    "NodeDown": "zflock.lab.nodes",
    "inspect": "zflock.lab.health",
    "LabHealth": "zflock.lab.health",
    "NodeHealth": "zflock.lab.health",
    "plan_lab": "zflock.lab.plan",
    "validate_lab_name": "zflock.lab.plan",
    "InvalidLabName": "zflock.lab.plan",
    "UnknownNode": "zflock.lab.plan",
    "LabPrerequisiteMissing": "zflock.lab.preflight",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zflock.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
