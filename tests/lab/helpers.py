"""Helpers for the lab tests: the CLI as a new process, and what a lab leaves on the host."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def zflock(*args: str, input: bytes | None = None, timeout: float = 120) -> Result:
    """Run the CLI as an operator would from a new shell: a new process, `python -m zflock`."""
    proc = subprocess.run(
        [sys.executable, "-m", "zflock", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode())


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Machine:
    """What a lab can leave behind, as the host sees it."""

    netns: frozenset[str]
    links: frozenset[str]
    mounts: frozenset[str]

    @classmethod
    def now(cls) -> Machine:
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
        return cls(
            netns=frozenset(line.split()[0] for line in netns.stdout.splitlines() if line),
            links=frozenset(
                line.split(":")[1].strip().split("@")[0] for line in links.stdout.splitlines()
            ),
            mounts=frozenset(Path("/proc/self/mounts").read_text().splitlines()),
        )

    def of_lab(self, name: str, lab_dir: Path) -> Machine:
        """Only what belongs to lab `name`: other engineers' labs come and go meanwhile."""

        def mine(item: str) -> bool:
            return f"zfl-{name}-" in item or item.endswith(f"-{name}") or str(lab_dir) in item

        return Machine(
            netns=frozenset(filter(mine, self.netns)),
            links=frozenset(filter(mine, self.links)),
            mounts=frozenset(filter(mine, self.mounts)),
        )
