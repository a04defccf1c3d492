"""Run the role's playbook from the controller, and read its recap."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.cluster import REPO, DeployLab, run

RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)


def recap(output: str) -> dict[str, dict[str, int]]:
    """`node1 : ok=3 changed=1 ...` lines of PLAY RECAP -> {host: {counter: n}}."""
    tail = output[output.rfind("PLAY RECAP") :] if "PLAY RECAP" in output else ""
    return {
        host: {k: int(v) for k, v in (pair.split("=") for pair in counters.split())}
        for host, counters in RECAP.findall(tail)
    }


def ansible_bin(name: str) -> str:
    venv = os.environ.get("ZFLOCK_DEPLOY_VENV")
    if not venv:
        raise RuntimeError("ZFLOCK_DEPLOY_VENV is not set: run tests/deploy/ci-step.sh")
    return str(Path(venv) / "bin" / name)


@dataclass
class Controller:
    lab: DeployLab
    key: Path  # the controller's SSH key into the nodes (and the operator key for the CLI)
    wheelhouse: Path
    inventory_file: Path | None = None  # the converged inventory, once deployed

    def inventory(self, path: Path, *, hosts: dict[str, dict[str, Any]], **group_vars: Any) -> Path:
        """An inventory (JSON is YAML) of the `zflock` group with these hosts and vars."""
        base: dict[str, Any] = {
            "zflock_pool_root": "tank/zflock",
            "zflock_zfs": "zfs-fuse",
            "zflock_zfs_install": True,
            "zflock_install_from": "wheelhouse",
            "zflock_wheelhouse": str(self.wheelhouse),
            "zflock_operator_keys": [Path(f"{self.key}.pub").read_text().strip()],
            "zflock_allow_client_hooks": True,
            "zflock_shutdown_grace": 60.0,
        }
        inventory = {"zflock": {"hosts": hosts, "vars": base | group_vars}}
        path.write_text(json.dumps(inventory, indent=1))
        return path

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {n.name: {"ansible_host": n.address} for n in self.lab.nodes.values()}

    def playbook(self, inventory: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        work = self.lab.work
        ssh_args = (
            "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
            "-o ControlMaster=auto -o ControlPersist=120s"
        )
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible" / "ansible.cfg"),
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key),
            "ANSIBLE_REMOTE_USER": "root",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "True",
        }
        argv = self.lab.in_netns(
            ansible_bin("ansible-playbook"),
            "-i",
            str(inventory),
            str(REPO / "ansible" / "site.yml"),
        )
        result = run(argv, timeout=timeout, check=False, env=env)
        (work / "ansible.log").open("a").write(result.stdout + result.stderr)
        return result
