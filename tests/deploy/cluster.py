"""The deploy tier's hosts: three systemd containers on a private dockerd.

Everything runs inside a network namespace made for the run: dockerd (its own
data-root, exec-root, socket and pidfile), the containers' bridge, and every
controller command (ansible-playbook, the zflock CLI), so the nodes' traffic
never leaves the namespace and the namespace has no route out. Teardown goes by
recorded container ids, the recorded dockerd PID and the namespace's name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DOCKER = "/usr/bin/docker"  # Debian's docker.io client, the same version as dockerd
SUBNET = "10.77.0"  # inside the run's own namespace: it cannot clash with the host
NODES = ("node1", "node2", "node3")

Result = subprocess.CompletedProcess[str]


def run(argv: Sequence[str], *, timeout: float, check: bool = True, **kw: object) -> Result:
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,  # type: ignore[call-overload]
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result


def build_image() -> Path:
    """The node image's root tarball (built once per input set, then cached)."""
    out = run([str(HERE / "build-image")], timeout=1200)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Node:
    name: str
    address: str
    container: str  # the container's id, recorded at `docker run`


@dataclass
class DeployLab:
    """A private dockerd in a network namespace, and the nodes it runs."""

    work: Path
    netns: str = field(default_factory=lambda: f"zfl-dep-{uuid.uuid4().hex[:6]}")
    dockerd_pid: int | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    network: str | None = None

    @property
    def socket(self) -> Path:
        return self.work / "docker.sock"

    def in_netns(self, *argv: str) -> list[str]:
        """argv run in the namespace (network only: the host's mounts stay visible)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def docker(self, *args: str, timeout: float = 120, check: bool = True, **kw: object) -> Result:
        return run(
            [DOCKER, "-H", f"unix://{self.socket}", *args], timeout=timeout, check=check, **kw
        )

    # -- up ------------------------------------------------------------------------

    def start_dockerd(self) -> None:
        run(["ip", "netns", "add", self.netns], timeout=10)
        run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], timeout=10)
        for d in ("data", "exec"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        log = open(self.work / "dockerd.log", "w")  # lives as long as dockerd
        # nsenter, not `ip netns exec`: that one remounts /sys, and dockerd needs
        # the host's cgroup mounts. No iptables, no default bridge, no NAT.
        proc = subprocess.Popen(
            self.in_netns(
                "/usr/sbin/dockerd",
                "--data-root", str(self.work / "data"),
                "--exec-root", str(self.work / "exec"),
                "-H", f"unix://{self.socket}",
                "--pidfile", str(self.work / "dockerd.pid"),
                "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
            ),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.dockerd_pid = proc.pid
        deadline = time.monotonic() + 60
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.work / "dockerd.log").read_text()[-2000:]
                raise RuntimeError(f"dockerd did not start: {tail}")
            time.sleep(0.5)

    def import_image(self, tarball: Path) -> str:
        tag = "zflock-deploy-node:latest"
        self.docker("import", "-c", 'CMD ["/sbin/init"]', str(tarball), tag, timeout=300)
        return tag

    def start_nodes(self, image: str, authorized_key: str) -> None:
        self.network = self.docker(
            "network", "create", "--internal", "--subnet", f"{SUBNET}.0/24",
            "-o", f"com.docker.network.bridge.name=zd{self.netns[-6:]}", "zflock-deploy",
        ).stdout.strip()  # fmt: skip
        for i, name in enumerate(NODES):
            address = f"{SUBNET}.{11 + i}"
            # systemd as PID 1: all capabilities this machine has (it lacks
            # CAP_SYS_RESOURCE, so --privileged cannot start), the host's cgroups,
            # /dev/fuse for zfs-fuse; each container runs its own zfs-fuse daemon.
            container = self.docker(
                "run", "-d", "--name", f"{self.netns}-{name}", "--hostname", name,
                "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--device", "/dev/fuse", "--cgroupns", "host",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "--network", "zflock-deploy", "--ip", address,
                "--stop-signal", "SIGRTMIN+3",
                image, "/sbin/init",
            ).stdout.strip()  # fmt: skip
            self.nodes[name] = Node(name, address, container)
        for node in self.nodes.values():
            self.wait_booted(node)
            self.exec(node, "mkdir", "-p", "-m", "700", "/root/.ssh")
            self.exec(node, "tee", "/root/.ssh/authorized_keys", input=authorized_key)

    def wait_booted(self, node: Node, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.exec(node, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            assert time.monotonic() < deadline, f"{node.name} did not boot: {state}"
            time.sleep(0.5)
        failed = self.exec(node, "systemctl", "--failed", "--no-legend").stdout.strip()
        assert not failed, f"{node.name}: failed units: {failed}"

    def exec(
        self,
        node: Node,
        *argv: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> Result:
        args = ["exec", *(["-i"] if input is not None else []), node.container, *argv]
        return self.docker(*args, check=check, timeout=timeout, input=input)

    # -- down ----------------------------------------------------------------------

    def down(self) -> None:
        """Remove what this run started, by recorded id, PID and name; never raises."""
        for node in self.nodes.values():
            self.docker("rm", "-f", node.container, check=False, timeout=120)
        if self.network:
            self.docker("network", "rm", self.network, check=False, timeout=60)
        if self.dockerd_pid is not None:
            try:
                os.kill(self.dockerd_pid, signal.SIGTERM)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    pid, _ = os.waitpid(self.dockerd_pid, os.WNOHANG)
                    if pid:
                        break
                    time.sleep(0.2)
                else:
                    os.kill(self.dockerd_pid, signal.SIGKILL)
                    os.waitpid(self.dockerd_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        shutil.rmtree(self.work / "data", ignore_errors=True)
