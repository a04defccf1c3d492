"""Stream transport options side by side, without ZFS (issue 15, item 3).

    sudo .venv/bin/python bench/transport_bench.py [--mib 512] [--samples 5]
                                                   [--options NAME,...] [--out docs/benchmarks.md]

On a fresh 2-node lab it writes MIB MiB of random bytes once into a file
that node1 sees, then streams that file from node1 to node2 into
`dd of=/dev/null` through each option, alternated (A, B, C, A, B, C, ...),
`--samples` times each, so load that drifts hits every option alike.

Every stream has the shape of a zflock full send: a producer process's pipe
(`cat FILE`, where zflock has `zfs send`) read by the sender, and a consumer
process's pipe (`dd of=/dev/null`, where zflock has `zfs receive`) written by
the receiver. The options:

* `openssh`: the raw baseline, `cat FILE | ssh node2 'dd of=/dev/null'` over
  the lab's OpenSSH (ssh_config as in the move bench, so OpenSSH's default
  cipher), through a ControlMaster connection opened before the timing.
* asyncssh options: the sender is zflock's own code path: `AgentClient`
  (its connect options, its host-key pinning), `SendStream` over the
  producer, `RemoteReceiver.receive` (request line, then write + drain per
  chunk, then the result line). Only the progress counter of the replication
  driver (one async generator step per chunk) is left out. The receiver is a
  small asyncssh server with the agent's performance-relevant listen options
  (ciphers, window, packet size, binary channel) whose session does what the
  agent's `receive_snapshot` does: read the request line, `read(N)` in a loop
  into a real `ReceiveStream` (its slices and drains). Constants that an
  option changes (WINDOW, MAX_PACKET, WRITE_SLICE, read sizes) are set in
  that option's processes only.
* `openssh-client`: an OpenSSH client (ControlMaster, host key pinned with
  StrictHostKeyChecking) sending the request line and the file on the
  `zflock-rpc` subsystem to the asyncssh receiver with today's settings: the
  sender half of "OpenSSH for the data channel".

CPU is per side: the sender's (the ssh master, or the Python sender, with
the producer `cat`) and the receiver's (node2's sshd and its session
processes, or the asyncssh server, with `dd`), read from /proc around each
sample, as seconds per GiB streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
PY = sys.executable
HERE = Path(__file__).resolve()
BASE_PORT = 7300
CONSUMER = ("dd", "of=/dev/null", "bs=1M", "status=none")
SAMPLE_TIMEOUT = 900.0
BEGIN = "<!-- transport_bench.py: begin -->"
END = "<!-- transport_bench.py: end -->"


@dataclass(frozen=True)
class Option:
    name: str
    what: str
    kind: str  # "openssh" | "asyncssh" | "openssh-client"
    window: int = 4 * MIB  # the channel window, both ends
    packet: int = 256 << 10  # max packet size, both ends
    send_chunk: int = MIB  # the sender's read from the producer, written whole + drain
    pipe_limit: int = MIB  # the producer pipe's StreamReader limit
    recv_read: int = 8 * MIB  # the receiver's read(N) on the channel
    write_slice: int = MIB  # the receiver's slices into the consumer's pipe, a drain each


def today() -> Option:
    """zflock's settings as the tree has them now (imported, so a change shows here)."""
    from zflock.agent.handlers import CHUNK
    from zflock.rpc.client import MAX_PACKET, WINDOW
    from zflock.zfs.streams import DEFAULT_CHUNK, WRITE_SLICE

    return Option(
        "today",
        f"zflock as it is: window {WINDOW >> 20} MiB, packets {MAX_PACKET >> 10} KiB, "
        f"sender reads {DEFAULT_CHUNK >> 20} MiB and drains after each, receiver reads "
        f"{CHUNK >> 20} MiB and writes {WRITE_SLICE >> 20} MiB slices",
        "asyncssh", WINDOW, MAX_PACKET, DEFAULT_CHUNK, MIB, CHUNK, WRITE_SLICE,
    )  # fmt: skip


def options() -> list[Option]:
    t = today()
    return [
        Option("openssh", "raw OpenSSH both ends (the baseline)", "openssh"),
        t,
        Option("asyncssh-defaults", "asyncssh's defaults: window 2 MiB, packets 32 KiB, "
               "receiver reads 4 MiB", "asyncssh", 2 * MIB, 32 << 10, MIB, MIB, 4 * MIB),
        Option("larger-window", "window 16 MiB, today's packets, receiver reads 32 MiB",
               "asyncssh", 16 * MIB, t.packet, t.send_chunk, t.pipe_limit, 32 * MIB,
               t.write_slice),
        Option("larger", "window 16 MiB, packets 1 MiB, receiver reads 32 MiB", "asyncssh",
               16 * MIB, MIB, t.send_chunk, t.pipe_limit, 32 * MIB, t.write_slice),
        Option("fewer-awaits", "today's window and packets; sender reads 4 MiB (pipe limit "
               "4 MiB), receiver reads 16 MiB and writes 4 MiB slices", "asyncssh",
               t.window, t.packet, 4 * MIB, 4 * MIB, 16 * MIB, 4 * MIB),
        Option("openssh-client", "OpenSSH client (host key pinned) into the asyncssh "
               "receiver with today's settings", "openssh-client", t.window, t.packet,
               t.send_chunk, t.pipe_limit, t.recv_read, t.write_slice),
    ]  # fmt: skip


@dataclass
class Sample:
    bytes: int
    seconds: float
    send_cpu: float
    recv_cpu: float

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds


@dataclass
class Result:
    option: Option
    samples: list[Sample] = field(default_factory=list)
    receiver_peak_rss: int = 0

    @property
    def rates(self) -> list[float]:
        return [s.rate for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def cpu_per_gib(self, side: str) -> float:
        return statistics.median(getattr(s, f"{side}_cpu") / s.bytes * GIB for s in self.samples)


# ---------------------------------------------------------------------------
# the two ends, each run as its own process inside a node


def _patch(opt: Option) -> None:
    """Set the option's constants in this process, where zflock's code reads them."""
    import zflock.rpc.client as client
    import zflock.zfs.streams as streams

    client.WINDOW, client.MAX_PACKET = opt.window, opt.packet
    streams.WRITE_SLICE = opt.write_slice


def _runner(limit: int) -> Any:
    from zflock.zfs.runner import Runner

    class PipeRunner(Runner):
        async def spawn(self, argv: Sequence[str], *, stdin: Any, stdout: Any, stderr: Any,
                        limit: int = limit) -> asyncio.subprocess.Process:  # fmt: skip
            return await super().spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                       limit=limit)  # fmt: skip

    return PipeRunner(stall=120.0)


async def serve(opt: Option, address: str, port: int, keys: Path) -> None:
    """The receiving end: what the agent's receive_snapshot does, into dd."""
    import asyncssh

    from zflock.rpc import codec
    from zflock.rpc import messages as m
    from zflock.rpc.client import CIPHERS
    from zflock.rpc.framing import read_message, write_message
    from zflock.zfs.streams import ReceiveStream

    _patch(opt)
    runner = _runner(MIB)

    async def session(process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            await read_message(process.stdin)
            n = 0
            async with ReceiveStream(runner, CONSUMER) as r:
                while chunk := await process.stdin.read(opt.recv_read):
                    await r.write(chunk)
                    n += len(chunk)
            done = m.Received(snapshot="bench", guid=1, bytes=n)
            await write_message(process.stdout, {"result": codec.encode(done)})
        finally:
            process.exit(0)

    await asyncssh.listen(
        address, port,
        server_host_keys=[str(keys / "host")],
        authorized_client_keys=str(keys / "authorized"),
        process_factory=session, encoding=None, allow_pty=False,
        x11_forwarding=False, agent_forwarding=False,
        encryption_algs=list(CIPHERS), window=opt.window, max_pktsize=opt.packet,
    )  # fmt: skip
    print("ready", flush=True)
    await asyncio.Event().wait()  # until the bench kills this process by its PID


async def send(opt: Option, address: str, port: int, keys: Path, payload: Path) -> dict[str, Any]:
    """The sending end, through zflock's client code; the connection is made before timing."""
    import asyncssh

    from zflock.cluster.config import NodeEntry
    from zflock.replication.endpoint import SourceIdentity, StepHeader
    from zflock.replication.model import SnapRef
    from zflock.rpc.client import AgentClient
    from zflock.rpc.replica import RemoteReceiver
    from zflock.zfs.streams import SendStream

    _patch(opt)
    host = (keys / "host.pub").read_text().strip()
    node = NodeEntry(name="node2", address=address, port=port, host_key=host)
    source = SourceIdentity(volume="bench", volume_id="bench", epoch=1, origin="node1",
                            node="node1")  # fmt: skip
    header = StepHeader(kind="full", to=SnapRef(name="bench", guid=1, order=1))
    async with AgentClient(node, asyncssh.read_private_key(str(keys / "client"))) as client:
        cpu0 = _own_cpu()
        t0 = time.monotonic()
        async with SendStream(_runner(opt.pipe_limit), ["cat", str(payload)]) as stream:

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await stream.read(opt.send_chunk):
                    yield chunk

            got = await RemoteReceiver(client, "bench").receive(source, header, chunks())
        seconds = time.monotonic() - t0
        cpu = _own_cpu() - cpu0
    return {"bytes": got.bytes, "seconds": seconds, "cpu": cpu}


def _own_cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# ---------------------------------------------------------------------------
# the bench, on the host


class Bench:
    def __init__(self, lab: Any, payload: Path, size: int) -> None:
        from zflock.lab import node_prefix

        self.lab = lab
        self.payload = payload
        self.size = size
        self.on1 = node_prefix(lab.state, "node1")
        self.on2 = node_prefix(lab.state, "node2")
        self.address = lab.state.nodes["node2"].address
        self.keys = lab.dir / "transport-keys"
        self.servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def make_keys(self) -> None:
        import asyncssh

        self.keys.mkdir(exist_ok=True)
        for name in ("host", "client"):
            key = asyncssh.generate_private_key("ssh-ed25519")
            key.write_private_key(str(self.keys / name))
            (self.keys / name).chmod(0o600)  # OpenSSH ignores a key others can read
            key.write_public_key(str(self.keys / f"{name}.pub"))
        (self.keys / "authorized").write_bytes((self.keys / "client.pub").read_bytes())

    def start_server(self, opt: Option, port: int) -> None:
        argv = [*self.on2, PY, str(HERE), "serve", json.dumps(asdict(opt)), self.address,
                str(port), str(self.keys)]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.servers[opt.name] = (proc, port)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: a server that dies closes its stdout
        if line.strip() != b"ready":
            raise RuntimeError(f"the {opt.name} receiver did not start")

    def stop_servers(self) -> None:
        for proc, _ in self.servers.values():
            if proc.poll() is None:
                proc.kill()  # our own child, by its Popen handle
            proc.wait()

    def sample(self, opt: Option, masters: dict[str, Any]) -> Sample:
        from benchkit import proc_cpu_seconds, tree_cpu

        if opt.kind == "openssh":
            sshd = self.lab.state.nodes["node2"].processes["sshd"].pid
            master = masters["openssh"]
            before = proc_cpu_seconds(master.pid), tree_cpu(sshd)
            seconds, own, _ = self._pipeline([self.payload], master.argv(shlex.join(CONSUMER)))
            after = proc_cpu_seconds(master.pid), tree_cpu(sshd)
            return Sample(self.size, seconds, after[0] - before[0] + own, after[1] - before[1])
        server, _ = self.servers[opt.name]
        if opt.kind == "openssh-client":
            master = masters["openssh-client"]
            request = self.keys / "request.json"
            before = proc_cpu_seconds(master.pid), proc_cpu_seconds(server.pid, children=True)
            argv = master.argv("zflock-rpc", options=["-s"])
            seconds, own, answer = self._pipeline([request, self.payload], argv)
            if f'"bytes":{self.size}' not in answer:
                raise RuntimeError(f"openssh-client: the receiver answered {answer[-200:]!r}")
            after = proc_cpu_seconds(master.pid), proc_cpu_seconds(server.pid, children=True)
            return Sample(self.size, seconds, after[0] - before[0] + own, after[1] - before[1])
        port = self.servers[opt.name][1]
        argv = [*self.on1, PY, str(HERE), "send", json.dumps(asdict(opt)), self.address,
                str(port), str(self.keys), str(self.payload)]  # fmt: skip
        before_recv = proc_cpu_seconds(server.pid, children=True)
        done = subprocess.run(argv, capture_output=True, timeout=SAMPLE_TIMEOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{opt.name} sender failed: {done.stderr.decode()[-400:]}")
        out = json.loads(done.stdout)
        if out["bytes"] != self.size:
            raise RuntimeError(f"{opt.name}: {out['bytes']} bytes arrived of {self.size}")
        recv = proc_cpu_seconds(server.pid, children=True) - before_recv
        return Sample(self.size, out["seconds"], out["cpu"], recv)

    def _pipeline(self, files: list[Path], ssh: list[str]) -> tuple[float, float, str]:
        """Time `cat FILES | SSH` from inside node1; (seconds, CPU of cat and the ssh
        client, what it printed: one line at most, which the pipe holds until the end)."""
        from benchkit import wait_cpu

        t0 = time.monotonic()
        cat = subprocess.Popen([*self.on1, "cat", *map(str, files)], stdout=subprocess.PIPE)
        assert cat.stdout is not None
        client = subprocess.Popen(ssh, stdin=cat.stdout, stdout=subprocess.PIPE)
        cat.stdout.close()
        rc_client, cpu_client = wait_cpu(client, SAMPLE_TIMEOUT)
        seconds = time.monotonic() - t0
        rc_cat, cpu_cat = wait_cpu(cat, 60)
        assert client.stdout is not None
        answer = client.stdout.read().decode(errors="replace")
        client.stdout.close()
        if rc_client or rc_cat:
            raise RuntimeError(f"`{shlex.join(ssh)}` exited {rc_client}, cat {rc_cat}")
        return seconds, cpu_client + cpu_cat, answer


def pinned_client_options(keys: Path, port: int, pinned: Path) -> list[str]:
    """An OpenSSH client to the asyncssh receiver: our key only, its host key pinned."""
    return [
        "-F", "/dev/null", "-p", str(port), "-l", "zflock", "-i", str(keys / "client"),
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={pinned}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
        "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com",
    ]  # fmt: skip


def render(results: Sequence[Result], machine: dict[str, str], size: int, rerun: str) -> str:
    base = next((r.median for r in results if r.option.name == "openssh"), 0.0)
    rows = [
        "| option | median | spread (min-max) | / openssh | sender CPU s/GiB | "
        "receiver CPU s/GiB | receiver peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rss = f"{r.receiver_peak_rss / 1e6:.0f} MB" if r.receiver_peak_rss else "-"
        rows.append(
            f"| {r.option.name} | {r.median / 1e6:.0f} MB/s | {min(r.rates) / 1e6:.0f}-"
            f"{max(r.rates) / 1e6:.0f} MB/s | {r.median / base if base else 0:.2f} | "
            f"{r.cpu_per_gib('send'):.2f} | {r.cpu_per_gib('recv'):.2f} | {rss} |"
        )
    what = "\n".join(f"- **{r.option.name}**: {r.option.what}" for r in results)
    samples = "\n".join(
        f"- {r.option.name} (MB/s, in order): {', '.join(f'{x / 1e6:.0f}' for x in r.rates)}"
        for r in results
    )
    machine_line = "; ".join(f"{k}: {v}" for k, v in machine.items())
    n = len(results[0].samples) if results else 0
    return f"""{BEGIN}
## Stream transport options

Measured by `bench/transport_bench.py` (issue 15, item 3): {size >> 20} MiB of random bytes
streamed from node1 to node2 of a fresh 2-node lab into `dd of=/dev/null` (no ZFS: the
transport alone), {n} samples per option taken in alternation. The producer and consumer
are pipes, as `zfs send` and `zfs receive` are; the asyncssh options run zflock's own
sender code (AgentClient, SendStream, RemoteReceiver) against a receiver doing what the
agent's `receive_snapshot` does (the module's docstring says exactly what). CPU: each
side's process CPU (producer and consumer included) per GiB, median.

{chr(10).join(rows)}

{what}

{samples}

Machine: {machine_line}

```sh
{rerun}
```
{END}
"""


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] in (["serve"], ["send"]):
        return node_side(args_list)
    sys.path.insert(0, str(HERE.parent))
    from benchkit import BenchFailed, Lab, log, merge_report, peak_rss, ssh_master
    from move_bench import describe_machine, load_average

    known = {o.name: o for o in options()}
    p = argparse.ArgumentParser(prog="transport_bench.py", description=(__doc__ or "").split(
        "\n\n")[0])  # fmt: skip
    p.add_argument("--mib", type=int, default=512, help="MiB streamed per sample (%(default)s)")
    p.add_argument("--samples", type=int, default=5, help="samples per option (%(default)s)")
    p.add_argument("--options", default=",".join(known), help="options, in order (all)")
    p.add_argument("--out", default=str(HERE.parent.parent / "docs" / "benchmarks.md"))
    args = p.parse_args(args_list)
    chosen = [o.strip() for o in args.options.split(",") if o.strip()]
    unknown = [o for o in chosen if o not in known]
    if unknown:
        p.error(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if args.mib < 1 or args.samples < 1:
        p.error("--mib and --samples must be at least 1")
    if os.geteuid() != 0:
        print("transport_bench: needs root (the lab uses namespaces)", file=sys.stderr)
        return 2
    size = args.mib * MIB
    load_at_start = load_average()
    lab = Lab("tbench" + secrets.token_hex(2))
    results = [Result(known[name]) for name in chosen]
    try:
        log(f"lab {lab.name}: 2 nodes")
        lab.up()
        payload = lab.dir / "payload.bin"
        lab.exec("node1", "dd", "if=/dev/urandom", f"of={payload}", "bs=1M",
                 f"count={args.mib}", "iflag=fullblock", "status=none")  # fmt: skip
        bench = Bench(lab, payload, size)
        bench.make_keys()
        request = {"zflock": 1, "op": "receive_snapshot", "args": {}}
        (bench.keys / "request.json").write_text(json.dumps(request) + "\n")
        try:
            for i, r in enumerate(results):
                if r.option.kind != "openssh":
                    bench.start_server(r.option, BASE_PORT + i)
            pinned = bench.keys / "known_hosts"
            host_pub = (bench.keys / "host.pub").read_text().strip()
            port = next((p for n, (_, p) in bench.servers.items() if n == "openssh-client"), 0)
            pinned.write_text(f"[{bench.address}]:{port} {host_pub}\n")
            client_opts = pinned_client_options(bench.keys, port, pinned)
            with (
                ssh_master(bench.on1, ["-F", str(lab.state.ssh_config)], "node2",
                           lab.dir / "ssh-transport") as raw,
                ssh_master(bench.on1, client_opts, bench.address,
                           lab.dir / "ssh-transport-client") as hybrid,
            ):  # fmt: skip
                masters = {"openssh": raw, "openssh-client": hybrid}
                for i in range(args.samples):
                    for r in results:
                        s = bench.sample(r.option, masters)
                        r.samples.append(s)
                        log(f"sample {i + 1}/{args.samples} {r.option.name}: "
                            f"{s.rate / 1e6:.0f} MB/s, CPU send {s.send_cpu:.2f} s, "
                            f"receive {s.recv_cpu:.2f} s")  # fmt: skip
            for r in results:
                if r.option.name in bench.servers:
                    r.receiver_peak_rss = peak_rss(bench.servers[r.option.name][0].pid)
        finally:
            bench.stop_servers()
    except (BenchFailed, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"transport_bench: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.down()
    rerun = shlex.join(["sudo", ".venv/bin/python", "bench/transport_bench.py", *args_list])
    section = render(results, describe_machine(load_at_start), size, rerun)
    out = Path(args.out)
    previous = out.read_text() if out.exists() else ""
    out.write_text(merge_report(previous, section, BEGIN, END))
    print(section)
    return 0


def node_side(args: list[str]) -> int:
    opt = Option(**json.loads(args[1]))
    address, port, keys = args[2], int(args[3]), Path(args[4])
    if args[0] == "serve":
        asyncio.run(serve(opt, address, port, keys))
        return 0
    print(json.dumps(asyncio.run(send(opt, address, port, keys, Path(args[5])))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
