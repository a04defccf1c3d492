"""Shared fixtures: private zfs-fuse daemons with a pool each, torn down by PID.

`zfs_node` and `zfs_node2` are session-scoped (a daemon and a 256M sparse
pool cost ~0.3 s, but dozens of tests share them). Each test that writes to
a pool takes its own unique dataset (`src_root` / `dst_root`), destroyed
afterwards, so tests never see each other's data.

The contract tests only use `ZfsNode.zfs` (a `Zfs`), `ZfsNode.path()` and
`ZfsNode.root`; a fixture for real OpenZFS can provide the same object.

Test tiers: with `ZFLOCK_TEST_ZFS=native` (set by tests/openzfs-vm inside
the OpenZFS guest) the nodes are kernel pools on sparse files instead, with
`daemon=None` and an empty command prefix. Kernel pools are visible to the
whole machine, so each gets a unique name and each test stays inside its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from zflock.cluster.config import AgentConfig
from zflock.lab.zfsfuse import ZfsFuseDaemon, start_zfs_fuse, stop_zfs_fuse
from zflock.zfs import Runner, Zfs, probe_capabilities

POOL_SIZE = 256 * 1024 * 1024

# Property tests judge outcomes, never speed: no per-example deadline and no
# "too slow" health check, which fail on a loaded 2-core CI machine (seen on CI:
# DeadlineExceeded in a table test, FailedHealthCheck in the cluster view's).
settings.register_profile("zflock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("zflock")


@dataclass(frozen=True)
class RecordingRunner(Runner):
    """The real runner, noting every argv (to see which commands a step runs)."""

    seen: list[list[str]] = field(default_factory=list)
    # ("start" | "end", argv) in the order they happened: which commands overlapped.
    events: list[tuple[str, list[str]]] = field(default_factory=list)

    async def run(self, argv: Sequence[str], **kwargs: Any) -> Any:
        self.seen.append(list(argv))
        self.events.append(("start", list(argv)))
        try:
            return await super().run(argv, **kwargs)
        finally:
            self.events.append(("end", list(argv)))


@dataclass
class ZfsNode:
    """A node's ZFS for tests: the client, its pool, and a way to reach mounted files."""

    zfs: Zfs
    pool: str
    mount_root: str  # the pool's mountpoint as seen inside the node
    daemon: ZfsFuseDaemon | None  # None where ZFS runs natively (no namespace)
    vdev: Path

    @property
    def prefix(self) -> tuple[str, ...]:
        return self.zfs.runner.prefix

    def path(self, dataset: str, *parts: str) -> Path:
        """Host path of a file in a mounted dataset (default mountpoints)."""
        if dataset != self.pool and not dataset.startswith(self.pool + "/"):
            raise ValueError(f"{dataset!r} is not in pool {self.pool!r}")
        inside = self.mount_root + dataset[len(self.pool) :]
        base = self.daemon.host_path(inside) if self.daemon else Path(inside)
        return base.joinpath(*parts)

    async def recording(self) -> tuple[Zfs, RecordingRunner]:
        """A client of this node's ZFS that notes every command it runs."""
        runner = RecordingRunner(prefix=self.prefix)
        return Zfs(runner, capabilities=await self.zfs.capabilities()), runner

    def solo_config(self, root: str, tmp_path: Path) -> AgentConfig:
        """An agent's config for one node, `solo`, with its volumes under `root`."""
        inventory = tmp_path / "cluster.toml"
        inventory.write_text('[nodes.solo]\naddress = "127.0.0.1"\nhost_key = "ssh-ed25519 AAAA"\n')
        mounted_at = self.mount_root + root[len(self.pool) :]
        return AgentConfig(node="solo", pool_root=root, mount_root=mounted_at, cluster=inventory)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the node (for setup steps the test is not about)."""
        return subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, check=False, timeout=60
        )


def zfs_fuse_missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (zfs-fuse and mount namespaces)"
    for tool in ("zfs-fuse", "zfs", "zpool", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install zfs-fuse util-linux)"
    return None


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{uuid.uuid4().hex[:6]}"


TIER_ENV = "ZFLOCK_TEST_ZFS"


def native_zfs_tier() -> bool:
    """Whether this run tests the kernel's ZFS (the OpenZFS tier) instead of zfs-fuse."""
    return os.environ.get(TIER_ENV, "fuse") == "native"


def native_zfs_missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (kernel ZFS pools)"
    for tool in ("zfs", "zpool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install zfsutils-linux)"
    if not Path("/sys/module/zfs").exists():
        return "the zfs kernel module is not loaded (modprobe zfs)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "zfs_fuse_only: exercises zfs-fuse itself; skipped in the OpenZFS tier"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not native_zfs_tier():
        return
    skip = pytest.mark.skip(reason=f"zfs-fuse specific ({TIER_ENV}=native)")
    for item in items:
        if item.get_closest_marker("zfs_fuse_only"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not native_zfs_tier():
        return [f"zfs tier: zfs-fuse ({TIER_ENV} unset)"]
    done = subprocess.run(
        ["zfs", "version"], capture_output=True, text=True, check=False, timeout=30
    )
    versions = " / ".join(done.stdout.split()) or done.stderr.strip()
    caps = asyncio.run(probe_capabilities(Runner(())))
    found = ", ".join(f"{k}={v}" for k, v in vars(caps).items())
    return [f"zfs tier: native kernel ZFS: {versions}", f"zfs probe: {found}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed lab test, attach the tail of every agent's log to the report: the lab
    is taken down with its logs, and a flaky failure is otherwise undiagnosable."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    lab = getattr(item, "funcargs", {}).get("agent_lab")
    if not report.failed or lab is None:
        return
    from zflock.lab import agents

    for name, node in lab.state.nodes.items():
        try:
            lines = agents.agent_log(node).read_text(errors="replace").splitlines()
        except OSError as exc:
            lines = [f"(no log: {exc})"]
        report.sections.append((f"agent log {name} (last 80 lines)", "\n".join(lines[-80:])))


def _start_native_node(base: Path, label: str) -> Iterator[ZfsNode]:
    reason = native_zfs_missing_reason()
    if reason:
        pytest.fail(f"{TIER_ENV}=native but {reason}")
    pool = unique(f"zt{label}")
    vdev = base / "pool.img"
    mount_root = base / "mnt"
    mount_root.mkdir()
    with open(vdev, "wb") as f:
        f.truncate(POOL_SIZE)
    try:
        subprocess.run(
            ["zpool", "create", "-f", "-m", f"{mount_root}/{pool}", pool, str(vdev)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield ZfsNode(
            zfs=Zfs(Runner(())),
            pool=pool,
            mount_root=f"{mount_root}/{pool}",
            daemon=None,
            vdev=vdev,
        )
    finally:
        try:
            subprocess.run(
                ["zpool", "destroy", "-f", pool], capture_output=True, timeout=60, check=False
            )
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _start_node(base: Path, label: str) -> Iterator[ZfsNode]:
    if native_zfs_tier():
        yield from _start_native_node(base, label)
        return
    reason = zfs_fuse_missing_reason()
    if reason:
        pytest.skip(reason)
    pool = unique(f"zt{label}")
    state = base / "state"
    vdev = base / "pool.img"
    # Mountpoints live under a private bind, so zfs-fuse's mkdirs of
    # mountpoints land in our tmp dir and never in the host's tree.
    mount_root = str(base / "mnt")
    daemon = start_zfs_fuse(state, extra_binds=((base / "mnt-store", mount_root),))
    try:
        with open(vdev, "wb") as f:
            f.truncate(POOL_SIZE)
        prefix = tuple(daemon.nsenter_prefix())
        subprocess.run(
            [*prefix, "zpool", "create", "-f", "-m", f"{mount_root}/{pool}", pool, str(vdev)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield ZfsNode(
            zfs=Zfs(Runner(prefix)),
            pool=pool,
            mount_root=f"{mount_root}/{pool}",
            daemon=daemon,
            vdev=vdev,
        )
    finally:
        try:
            subprocess.run(
                [*daemon.nsenter_prefix(), "zpool", "destroy", "-f", pool],
                capture_output=True,
                timeout=60,
                check=False,
            )
        finally:
            stop_zfs_fuse(daemon.pid)
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def zfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZfsNode]:
    """A private zfs-fuse daemon with a 256M pool (the source side in send tests)."""
    yield from _start_node(tmp_path_factory.mktemp("zfsnode-a"), "a")


@pytest.fixture(scope="session")
def zfs_node2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZfsNode]:
    """A second, independent daemon and pool (the destination side)."""
    yield from _start_node(tmp_path_factory.mktemp("zfsnode-b"), "b")


@pytest.fixture(scope="session")
def zfs_pair(zfs_node: ZfsNode, zfs_node2: ZfsNode) -> tuple[ZfsNode, ZfsNode]:
    """(source, destination): two independent daemons/pools for send -> receive."""
    return zfs_node, zfs_node2


def _scratch(node: ZfsNode) -> Iterator[str]:
    name = f"{node.pool}/{unique('t')}"
    done = node.run("zfs", "create", name)
    assert done.returncode == 0, done.stderr
    try:
        yield name
    finally:
        _destroy_tree(node, name)


def _destroy_tree(node: ZfsNode, name: str) -> None:
    # Unmount first, children before parents and by force (a failed test may
    # have left a file open): zfs-fuse calls a dataset "busy" when destroy has
    # to unmount it itself.
    listed = node.run("zfs", "list", "-H", "-r", "-o", "name", "-t", "filesystem", name)
    for each in reversed(listed.stdout.split()):
        node.run("zfs", "unmount", "-f", each)
    deadline = time.monotonic() + 10
    while True:
        done = node.run("zfs", "destroy", "-r", "-f", name)
        if done.returncode == 0 or "does not exist" in done.stderr:
            return
        if "held" in done.stderr or "busy" in done.stderr:
            # User holds left by a test (OpenZFS; zflock's base hold on a
            # replica): release them, then retry. `zfs destroy -r` reports a
            # held snapshot as "dataset is busy", a single snapshot as "held".
            snaps = node.run("zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", name)
            held = snaps.stdout.split()
            holds = node.run("zfs", "holds", "-H", *held) if held else snaps
            for line in holds.stdout.splitlines():
                snapshot, tag = line.split("\t")[:2]
                node.run("zfs", "release", tag, snapshot)
        if time.monotonic() > deadline:
            raise AssertionError(f"could not clean up {name}: {done.stderr.strip()}")
        time.sleep(0.2)


@pytest.fixture
def src_root(zfs_node: ZfsNode) -> Iterator[str]:
    """A fresh dataset on zfs_node for this test alone (destroyed afterwards)."""
    yield from _scratch(zfs_node)


@pytest.fixture
def dst_root(zfs_node2: ZfsNode) -> Iterator[str]:
    """A fresh dataset on zfs_node2 for this test alone (destroyed afterwards)."""
    yield from _scratch(zfs_node2)
