"""The floor of a cutover done by hand, between the nodes the move bench uses (issue 15, item 2).

What an operator who knows ZFS would type, with nothing in between:

    zfs set readonly=on SRC                           (the fence)
    zfs snapshot SRC@N
    zfs send -i @N-1 SRC@N | ssh DST zfs receive -F DST_DS   (an SSH connection opened before)
    zfs set readonly=off DST_DS                       (on DST)
    zfs mount DST_DS

Each local command runs directly in its node (nsenter, no SSH, no Python);
the stream goes over an OpenSSH master connection opened before the timing,
so no key exchange is timed. Before each sample (untimed) a 64 KiB write
lands on the source, about what the move bench's writer leaves between the
last pre-copy round and the fence, and the destination copy is put back the
way a zflock replica is: read-only, not mounted (canmount=noauto).

The datasets are plain ones beside the volumes (`<pool>/floor-<volume>`),
copied from the bench volume's data, so the floor moves the same amount of
data in its set-up but touches no zflock state. They are destroyed after.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from move_bench import CMD_TIMEOUT, BenchFailed, Lab, ssh_master

SAMPLES = 5
DELTA_BYTES = 64 << 10


@dataclass
class Floor:
    samples: list[float] = field(default_factory=list)  # seconds, fence to mounted
    steps: dict[str, list[float]] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    def step_p50(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.steps.items()}


def _run(argv: Sequence[str], *, stdin: int | None = None) -> None:
    done = subprocess.run(
        list(argv), stdin=stdin, capture_output=True, check=False, timeout=CMD_TIMEOUT
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BenchFailed(f"cutover floor: `{' '.join(argv)}` failed: {tail}")


def measure_floor(lab: Lab, volume: str, src: str, dst: str, samples: int = SAMPLES) -> Floor:
    """Time `samples` hand-made cutovers from src to dst (see the module)."""
    from zflock.lab import node_prefix

    state = lab.state
    on_src, on_dst = node_prefix(state, src), node_prefix(state, dst)
    src_ds = f"{state.nodes[src].pool}/floor-{volume}"
    dst_ds = f"{state.nodes[dst].pool}/floor-{volume}"
    mnt = f"/floorbench-{volume}"
    floor = Floor()
    try:
        # Set-up, untimed: the volume's data copied to a plain dataset, a full copy on dst.
        base = f"{lab.dataset(volume)}@floorbase"
        _run([*on_src, "zfs", "snapshot", base])
        send = subprocess.Popen([*on_src, "zfs", "send", base], stdout=subprocess.PIPE)
        try:
            _run([*on_src, "zfs", "receive", src_ds], stdin=send.stdout.fileno())  # type: ignore[union-attr]
        finally:
            send.wait(timeout=CMD_TIMEOUT)
        _run([*on_src, "zfs", "destroy", base])
        _run([*on_src, "zfs", "set", f"mountpoint={mnt}", src_ds])  # remounts it there
        with ssh_master(lab, src, dst) as ssh:
            _run([*on_src, "zfs", "snapshot", f"{src_ds}@f0"])
            _stream(on_src, ssh, f"{src_ds}@f0", None, dst_ds)
            _run([*on_dst, "zfs", "set", "canmount=noauto", dst_ds])
            _run([*on_dst, "zfs", "set", f"mountpoint={mnt}", dst_ds])
            for i in range(1, samples + 1):
                # Untimed: a small delta on the source; the destination as a replica.
                _run([*on_src, "dd", "if=/dev/urandom", f"of={mnt}/delta{i}",
                      f"bs={DELTA_BYTES}", "count=1", "conv=fsync", "status=none"])  # fmt: skip
                _run([*on_dst, "zfs", "set", "readonly=on", dst_ds])
                subprocess.run([*on_dst, "zfs", "unmount", dst_ds], capture_output=True)
                steps = _one(on_src, on_dst, ssh, src_ds, dst_ds, i)
                floor.samples.append(sum(steps.values()))
                for k, v in steps.items():
                    floor.steps.setdefault(k, []).append(v)
                _run([*on_src, "zfs", "set", "readonly=off", src_ds])
    finally:
        for prefix, ds in ((on_dst, dst_ds), (on_src, src_ds)):
            subprocess.run([*prefix, "zfs", "unmount", ds], capture_output=True, check=False)
            subprocess.run([*prefix, "zfs", "destroy", "-r", ds], capture_output=True, check=False)
        subprocess.run(
            [*on_src, "zfs", "destroy", f"{lab.dataset(volume)}@floorbase"],
            capture_output=True,
            check=False,
        )
    return floor


def _stream(on_src: list[str], ssh: list[str], snap: str, base: str | None, dst: str) -> None:
    argv = [*on_src, "zfs", "send", *(["-i", base] if base else []), snap]
    send = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        _run([*ssh, "zfs", "receive", "-F", dst], stdin=send.stdout.fileno())  # type: ignore[union-attr]
    finally:
        if send.wait(timeout=CMD_TIMEOUT) != 0:
            raise BenchFailed(f"cutover floor: zfs send {snap} failed")


def _one(
    on_src: list[str], on_dst: list[str], ssh: list[str], src: str, dst: str, i: int
) -> dict[str, float]:
    """One hand-made cutover; seconds per step."""
    steps: dict[str, float] = {}
    t = time.monotonic()
    _run([*on_src, "zfs", "set", "readonly=on", src])
    steps["fence"] = time.monotonic() - t
    t = time.monotonic()
    _run([*on_src, "zfs", "snapshot", f"{src}@f{i}"])
    steps["snapshot"] = time.monotonic() - t
    t = time.monotonic()
    _stream(on_src, ssh, f"{src}@f{i}", f"{src}@f{i - 1}", dst)
    steps["send | ssh | receive"] = time.monotonic() - t
    t = time.monotonic()
    _run([*on_dst, "zfs", "set", "readonly=off", dst])
    _run([*on_dst, "zfs", "mount", dst])
    steps["writable + mount"] = time.monotonic() - t
    return steps
