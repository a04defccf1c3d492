"""A real dockerd in each lab node, and a busybox image made from Debian's busybox-static.

Each node's dockerd runs inside the node's network and mount namespaces (so it
sees that node's ZFS mounts and its agent's plugin socket), with its own
data-root, exec-root, pidfile and API socket under the node's directory. Its
PID is recorded in the lab state (role "dockerd": `lab down` stops it first)
and it is stopped by that PID. No registry is used: the image is imported.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.agentlab import AgentLab, agent_lab_session, patience, wait_until
from zflock import lab
from zflock.lab import agents, procs

DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin may hold another one
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
IMAGE = "zflock-busybox:test"
ROLE = "dockerd"
CGROUPS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


class UnixHTTP(http.client.HTTPConnection):
    """HTTP over a unix socket, as dockerd talks to a plugin."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=patience(30))
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.path))


def plugin_post(sock: Path, endpoint: str, request: bytes) -> dict[str, Any]:
    """POST to a plugin socket as dockerd would; the answer's JSON (status 500 with an Err,
    200 without)."""
    conn = UnixHTTP(sock)
    try:
        conn.request("POST", endpoint, request, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        body: dict[str, Any] = json.loads(answer.read())
        assert answer.status == (500 if body.get("Err") else 200), (answer.status, body)
        return body
    finally:
        conn.close()


def docker_unavailable_reason() -> str | None:
    for path in (DOCKER, DOCKERD, BUSYBOX):
        if not os.path.exists(path):
            return (
                f"{path} missing: the docker tier needs Debian's docker.io and busybox-static "
                "(.ci/setup installs them; CI sets ZFLOCK_DOCKER_REQUIRED=1 and never skips)"
            )
    return None


def busybox_rootfs_tar(dest: Path) -> Path:
    """A root filesystem of one static busybox and its applets, as a tar for `docker import`."""
    tar_path = dest / "busybox-rootfs.tar"
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(tar_path, "w") as tar:
        for d in ("bin", "data", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return tar_path


@dataclass
class NodeDocker:
    """One node's dockerd: start, stop (by recorded PID), restart, and its client."""

    agent_lab: AgentLab
    node: str
    root: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "dockerd.log"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    def argv(self) -> list[str]:
        return [
            *lab.node_prefix(self.agent_lab.state, self.node),
            DOCKERD,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "-H", f"unix://{self.socket}",
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--log-level=warn",
        ]  # fmt: skip

    def bind_plugin_dir(self) -> None:
        """Show the node's agent socket to this dockerd as /run/docker/plugins/zflock.sock.

        The bind lives in the node's private mount namespace: the host's
        /run/docker/plugins (another tier's dockerd) never sees it.
        """
        plugins = agents.docker_plugin_dir(self.agent_lab.state.nodes[self.node])
        # The agent answers its peers a moment before its plugin socket is up.
        wait_until("the agent's plugin socket", (plugins / "zflock.sock").exists, timeout=30)
        os.makedirs("/run/docker/plugins", exist_ok=True)
        r = self.agent_lab.node_run(self.node, "mountpoint", "-q", "/run/docker/plugins")
        if r.returncode != 0:
            r = self.agent_lab.node_run(
                self.node, "mount", "--bind", str(plugins), "/run/docker/plugins"
            )
            assert r.returncode == 0, r.stderr

    def mount_cgroups(self) -> None:
        """cgroup v1 hierarchies for dockerd: `ip netns exec`'s fresh /sys has none."""
        r = self.agent_lab.node_run(self.node, "mountpoint", "-q", "/sys/fs/cgroup/devices")
        if r.returncode == 0:
            return
        steps = [["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", "/sys/fs/cgroup"]]
        for controller in CGROUPS:
            path = f"/sys/fs/cgroup/{controller}"
            steps += [["mkdir", path], ["mount", "-t", "cgroup", "-o", controller, "cgroup", path]]
        for argv in steps:
            r = self.agent_lab.node_run(self.node, *argv)
            assert r.returncode == 0, f"{self.node}: {argv}: {r.stderr}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.bind_plugin_dir()
        self.mount_cgroups()
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        state = self.agent_lab.state
        state.nodes[self.node].processes[ROLE] = procs.record(proc.pid)
        lab.save_state(state)

        def ready() -> bool:
            if proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"dockerd on {self.node} exited: {tail}")
            return self.docker("version", check=False).returncode == 0

        wait_until(f"dockerd on {self.node}", ready, timeout=90, interval=0.3)
        proc.returncode = 0  # reaped by PID from now on, like the lab's processes

    def stop(self) -> None:
        rec = self.agent_lab.state.nodes[self.node].processes.get(ROLE)
        if rec is None:
            return
        alive = procs.is_running(rec)
        running = self.docker("ps", "-q", check=False).stdout.split() if alive else []
        if running:
            self.docker("rm", "-f", *running, check=False)
        procs.stop(rec, timeout=patience(20))
        try:  # our child: collect it, or it stays a zombie until the test process ends
            os.waitpid(rec.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        del self.agent_lab.state.nodes[self.node].processes[ROLE]
        lab.save_state(self.agent_lab.state)

    def restart(self) -> None:
        self.stop()
        self.start()

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=patience(timeout),
        )
        if check:
            assert r.returncode == 0, f"{self.node}: docker {' '.join(args)}: {r.stderr.strip()}"
        return r

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@dataclass
class DockerLab:
    agent_lab: AgentLab
    nodes: dict[str, NodeDocker]

    def __getitem__(self, node: str) -> NodeDocker:
        return self.nodes[node]


@contextmanager
def docker_lab_session(tmp: Path, nodes: int = 2) -> Iterator[DockerLab]:
    reason = docker_unavailable_reason()
    if reason and os.environ.get("ZFLOCK_DOCKER_REQUIRED"):
        pytest.fail(reason)  # set by .ci/run: this tier must run there
    if reason:
        pytest.skip(reason)
    tar = busybox_rootfs_tar(tmp)
    with agent_lab_session(nodes=nodes) as agent_lab:
        dockers = {
            name: NodeDocker(agent_lab, name, node.dir / "docker")
            for name, node in agent_lab.state.nodes.items()
        }
        try:
            for d in dockers.values():
                d.start()
                d.docker("import", str(tar), IMAGE)
            yield DockerLab(agent_lab, dockers)
        finally:
            for d in dockers.values():
                d.stop()
