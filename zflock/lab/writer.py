"""A steady writer for tests, the benchmark and the demo: numbered, fsynced records.

Run it as `python -P -m zflock.lab.writer SUBCOMMAND` (`-P`: inside a lab node
the working directory is `/`, where `/zflock` would shadow this package).

    run     --file F --acks A [--interval 0.01] [--size 64]
    start   --file F --acks A --pidfile P [--create] [--interval] [--size]
    stop    --pidfile P [--timeout 10]
    verify  --file F --acks A

`run` appends record n (`f"{n:08d} {payload}\\n"`, payload derived from n
only) to F, fsyncs it, and only then appends n to the acknowledgement log A.
A record that failed in any way is not acknowledged, so after a move
"every acknowledged number is in F on the destination" is exactly the
promise "no acknowledged write is lost". n is re-read from F before every
record, so a writer restarted on another node (or after a failed fsync
whose data did land) continues where the file really ends.

F is opened with O_APPEND and never O_CREAT: once the volume is unmounted,
the path leads into the bare mountpoint directory, and a write there must
fail instead of creating a stray file that would hide the loss.

This module imports nothing from zflock: `start`/`stop` run as move hooks,
inside the downtime window, so their start-up must stay as short as Python's.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

# hashlib, json and subprocess are imported where they are used, and no
# dataclasses (which pulls in inspect): `stop` and `start` run as move hooks,
# inside the downtime the benchmark measures, so their start-up is kept to
# little more than Python's own.

DEFAULT_INTERVAL = 0.01
DEFAULT_SIZE = 64
NUMBER_WIDTH = 8
MODULE = "zflock.lab.writer"


class CorruptRecord(ValueError):
    """A line of the records file that is not the record its number promises."""


# ---------------------------------------------------------------------------
# Pure pieces (imported by tests, the bench and the demo)


def payload(n: int, size: int = DEFAULT_SIZE) -> str:
    """The payload of record n: sha256(str(n)) in hex, repeated and cut to `size` chars."""
    if size < 1:
        raise ValueError(f"payload size must be at least 1, not {size}")
    import hashlib

    digest = hashlib.sha256(str(n).encode()).hexdigest()
    return (digest * (size // len(digest) + 1))[:size]


def record_line(n: int, size: int = DEFAULT_SIZE) -> bytes:
    """The exact bytes of record n, newline included."""
    if n < 1:
        raise ValueError(f"record numbers start at 1, not {n}")
    return f"{n:0{NUMBER_WIDTH}d} {payload(n, size)}\n".encode()


def parse_record(line: bytes) -> int:
    """The number of a complete record line (with its newline); CorruptRecord if it is not one.

    The payload length is taken from the line itself, so a file written with
    any --size verifies without being told the size.
    """
    if not line.endswith(b"\n"):
        raise CorruptRecord(f"partial line {line[:40]!r}")
    number, sep, rest = line[:-1].partition(b" ")
    if not sep or len(number) < NUMBER_WIDTH or not number.isdigit() or not rest:
        raise CorruptRecord(f"malformed line {line[:40]!r}")
    n = int(number)
    if n < 1 or line != record_line(n, len(rest)):
        raise CorruptRecord(f"line {line[:40]!r} is not record {n}")
    return n


def parse_last_number(data: bytes, *, from_start: bool = True) -> int:
    """The number of the last complete record in `data`, 0 if there is none.

    `data` is the whole file (from_start=True) or a tail of it
    (from_start=False, where the first line may be cut and is never used).
    A trailing partial line is ignored: it is no record. CorruptRecord if
    the last complete line is not a valid record, or a tail holds no whole line.
    """
    end = data.rfind(b"\n")
    if end < 0:
        if from_start:
            return 0
        raise CorruptRecord("no complete line in the tail read")
    start = data.rfind(b"\n", 0, end) + 1
    if start == 0 and not from_start:
        raise CorruptRecord("the tail read holds no whole line")
    return parse_record(data[start : end + 1])


def parse_acks(data: bytes) -> tuple[list[int], int]:
    """Acknowledged numbers in file order, and how many lines are malformed.

    A trailing line without a newline is an acknowledgement being written
    when the writer was killed: counted as malformed, never as acknowledged.
    """
    numbers: list[int] = []
    bad = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        bad += 1
        lines.pop()
    for line in lines:
        if line.isdigit() and int(line) >= 1:
            numbers.append(int(line))
        else:
            bad += 1
    return numbers, bad


class Verdict:
    """What `verify` found; `ok` when every acknowledged write is intact and in order."""

    def __init__(
        self,
        acked: int,
        records: int,
        missing: list[int] | None = None,
        corrupt: int = 0,
        partial: bool = False,
        out_of_order: int = 0,
        bad_acks: int = 0,
        acks_unordered: int = 0,
    ) -> None:
        self.acked = acked
        self.records = records
        self.missing = missing or []  # acked but not present (all of them)
        self.corrupt = corrupt  # lines that are not a valid record (a torn last line included)
        self.partial = partial  # the file ends in the middle of a line
        self.out_of_order = out_of_order  # valid records not at the position their number says
        self.bad_acks = bad_acks  # malformed lines in the acks file
        # acks not strictly increasing: two writers at once, or a restarted count
        self.acks_unordered = acks_unordered

    def __repr__(self) -> str:
        return f"Verdict({self.summary()})"

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.corrupt
            or self.partial
            or self.out_of_order
            or self.bad_acks
            or self.acks_unordered
        )

    def summary(self) -> dict[str, object]:
        return {
            "acked": self.acked,
            "records": self.records,
            "missing": self.missing[:10],
            "corrupt": self.corrupt,
            "partial": self.partial,
            "out_of_order": self.out_of_order,
            "bad_acks": self.bad_acks,
            "acks_unordered": self.acks_unordered,
            "ok": self.ok,
        }


def verify_data(records: bytes, acks: bytes) -> Verdict:
    """Check records against acknowledgements: F must be exactly records 1..M, in order,
    and every acknowledged number must be one of them."""
    lines = records.splitlines(keepends=True)
    partial = bool(lines) and not lines[-1].endswith(b"\n")
    numbers: list[int] = []
    corrupt = 0
    for line in lines:
        try:
            numbers.append(parse_record(line))
        except CorruptRecord:
            corrupt += 1
    out_of_order = sum(1 for i, n in enumerate(numbers, start=1) if n != i)
    acked, bad_acks = parse_acks(acks)
    unordered = sum(1 for a, b in itertools.pairwise(acked) if b <= a)
    present = set(numbers)
    missing = sorted({n for n in acked if n not in present})
    return Verdict(
        acked=len(acked),
        records=len(numbers),
        missing=missing,
        corrupt=corrupt,
        partial=partial,
        out_of_order=out_of_order,
        bad_acks=bad_acks,
        acks_unordered=unordered,
    )


def verify_files(records: str, acks: str) -> Verdict:
    """verify_data over two files; a missing records file counts as empty (then every
    acknowledged number is missing), a missing acks file as no acknowledgements."""
    return verify_data(_read_or_empty(records), _read_or_empty(acks))


def _read_or_empty(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def writer_argv(
    command: str, *args: str, python: str | None = None, isolated: bool = True
) -> list[str]:
    """argv running this module: e.g. writer_argv("stop", "--pidfile", P) for a move hook."""
    return [python or sys.executable, *(["-P"] if isolated else []), "-m", MODULE, command, *args]


# ---------------------------------------------------------------------------
# run


class _Stop:
    """Set by SIGTERM/SIGINT; the loop checks it between records, never inside one."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def _tail(path: str, size: int) -> tuple[bytes, bool]:
    """The last bytes of `path` (enough for two records) and whether they start the file."""
    want = max(8192, 4 * (size + NUMBER_WIDTH + 8))
    fd = os.open(path, os.O_RDONLY)
    try:
        length = os.fstat(fd).st_size
        start = max(0, length - want)
        return os.pread(fd, length - start, start), start == 0
    finally:
        os.close(fd)


def _append(path: str, data: bytes, *, create: bool) -> None:
    """Append `data` in one write and fsync it; raise on any shortfall."""
    flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):
            # A short append leaves a torn line: report it, never acknowledge it.
            raise OSError(errno.EIO, f"short write: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _sleep(seconds: float, stop: _Stop) -> None:
    # Short slices so a long --interval still exits promptly on SIGTERM
    # (PEP 475 resumes an interrupted sleep for its full remainder).
    deadline = time.monotonic() + seconds
    while not stop.requested:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def run(
    file: str, acks: str, *, interval: float = DEFAULT_INTERVAL, size: int = DEFAULT_SIZE
) -> int:
    """Write records until SIGTERM/SIGINT; return 0. Errors are counted, logged once per
    kind to stderr, and retried after `interval`."""
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    written = 0
    errors = 0
    seen: set[str] = set()
    _log(f"writer {os.getpid()} started on {file}")
    while not stop.requested:
        try:
            data, from_start = _tail(file, size)
            n = parse_last_number(data, from_start=from_start) + 1
            _append(file, record_line(n, size), create=False)
        except (OSError, CorruptRecord) as exc:
            errors += 1
            kind = (
                errno.errorcode.get(exc.errno or 0, str(exc.errno))
                if isinstance(exc, OSError)
                else "corrupt"
            )
            if kind not in seen:  # one line per kind: a fenced volume fails thousands of times
                seen.add(kind)
                _log(f"writer: not acknowledged ({kind}): {exc}")
            _sleep(interval, stop)
            continue
        # The record is durable: only now may it count as acknowledged.
        try:
            _append(acks, f"{n}\n".encode(), create=True)
        except OSError as exc:
            # Durable but unacknowledged is allowed (verify only checks acks);
            # the next round re-reads the file and moves on to n + 1.
            errors += 1
            _log(f"writer: record {n} written but its ack failed: {exc}")
        else:
            written += 1
        _sleep(interval, stop)
    _log(f"writer {os.getpid()} stopped: {written} records acknowledged, {errors} errors")
    return 0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# start / stop: a detached writer identified by a pidfile


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    # The state field follows the command name, which may contain ')'.
    return stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


def is_writer(pid: int) -> bool:
    """True when `pid` is alive and is a `run` of this module (not a recycled PID)."""
    args = _cmdline(pid)
    if not args or _is_zombie(pid):
        return False
    return any(
        a == "-m" and i + 2 < len(args) and args[i + 1] == MODULE and args[i + 2] == "run"
        for i, a in enumerate(args)
    )


def read_pidfile(path: str) -> int | None:
    """The PID in `path`, None if the file is missing or holds no PID."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def start(
    file: str,
    acks: str,
    pidfile: str,
    *,
    create: bool = False,
    interval: float = DEFAULT_INTERVAL,
    size: int = DEFAULT_SIZE,
) -> int:
    """Start a detached `run`; 1 with one line on stderr if `pidfile` names a live writer."""
    old = read_pidfile(pidfile)
    if old is not None and is_writer(old):
        _log(f"writer: already running as PID {old} (pidfile {pidfile})")
        return 1
    file = os.path.abspath(file)
    acks = os.path.abspath(acks)
    if create:
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        else:
            os.fsync(fd)
            os.close(fd)
            _fsync_dir(os.path.dirname(file))
    argv = writer_argv(
        "run", "--file", file, "--acks", acks, "--interval", str(interval), "--size", str(size)
    )
    import subprocess

    with open(pidfile + ".log", "ab") as log, open(os.devnull, "rb") as devnull:
        # A new session: a move hook's process group and its timeout never reach it.
        # stdout to /dev/null and cwd "/": the hook's pipes close when the hook
        # exits, and the writer never pins a directory of a volume being unmounted.
        child = subprocess.Popen(
            argv,
            stdin=devnull,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    tmp = f"{pidfile}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{child.pid}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pidfile)  # never a half-written pidfile for a concurrent stop
    return 0


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_writer(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)  # hooks run inside the downtime window: poll finely
    return True


def stop(pidfile: str, *, timeout: float = 10.0) -> int:
    """Stop the writer named by `pidfile`: SIGTERM, SIGKILL after `timeout`. Idempotent."""
    pid = read_pidfile(pidfile)
    if pid is None:
        if os.path.exists(pidfile):
            _log(f"writer: {pidfile} holds no PID; removed")
            os.unlink(pidfile)
        return 0
    if is_writer(pid):
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(pid, wait):
                break
        else:
            _log(f"writer: PID {pid} survived SIGKILL")
            return 1
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    return 0


# ---------------------------------------------------------------------------
# command line


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -P -m {MODULE}", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--file", required=True, help="records file (on the volume)")
        q.add_argument("--acks", required=True, help="acknowledgement log (off the volume)")
        q.add_argument("--interval", type=_positive_float, default=DEFAULT_INTERVAL)
        q.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, help="payload chars")

    common(sub.add_parser("run", help="write records until SIGTERM"))
    s = sub.add_parser("start", help="start a detached writer")
    common(s)
    s.add_argument("--pidfile", required=True)
    s.add_argument("--create", action="store_true", help="create the records file if absent")
    t = sub.add_parser("stop", help="stop the writer named by a pidfile (idempotent)")
    t.add_argument("--pidfile", required=True)
    t.add_argument("--timeout", type=_positive_float, default=10.0)
    v = sub.add_parser("verify", help="check every acknowledged record; exit 1 on a problem")
    v.add_argument("--file", required=True)
    v.add_argument("--acks", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return run(args.file, args.acks, interval=args.interval, size=args.size)
        if args.command == "start":
            return start(
                args.file,
                args.acks,
                args.pidfile,
                create=args.create,
                interval=args.interval,
                size=args.size,
            )
        if args.command == "stop":
            return stop(args.pidfile, timeout=args.timeout)
        verdict = verify_files(args.file, args.acks)
        import json

        print(json.dumps(verdict.summary()))
        return 0 if verdict.ok else 1
    except OSError as exc:
        _log(f"writer {args.command}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
