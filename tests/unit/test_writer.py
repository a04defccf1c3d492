"""The lab's steady writer: pure record/verify logic, and real detached processes in a tmp dir.

No assertion depends on how fast anything runs: the process tests wait for
conditions (acks appearing, an error logged) with a generous deadline that
only turns a hang into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ZfsNode
from zflock.lab.writer import (
    CorruptRecord,
    is_writer,
    parse_acks,
    parse_last_number,
    parse_record,
    payload,
    read_pidfile,
    record_line,
    verify_data,
    writer_argv,
)

# ---------------------------------------------------------------------------
# pure parts


def records(*numbers: int, size: int = 64) -> bytes:
    return b"".join(record_line(n, size) for n in numbers)


def acks(*numbers: int) -> bytes:
    return b"".join(f"{n}\n".encode() for n in numbers)


def test_record_line_is_deterministic_and_sized() -> None:
    line = record_line(1)
    assert line == (b"00000001 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b\n")
    assert record_line(7, 5) == b"00000007 " + payload(7, 100)[:5].encode() + b"\n"
    assert len(record_line(123, 200)) == 8 + 1 + 200 + 1  # payload repeats past 64 chars
    assert record_line(123, 200) == record_line(123, 200)
    assert record_line(123_456_789, 3).startswith(b"123456789 ")  # wider numbers still parse
    with pytest.raises(ValueError):
        record_line(0)
    with pytest.raises(ValueError):
        payload(1, 0)


@pytest.mark.parametrize("size", [1, 64, 65, 300])
def test_parse_record_roundtrip(size: int) -> None:
    for n in (1, 2, 99, 100_000_000):
        assert parse_record(record_line(n, size)) == n


@pytest.mark.parametrize(
    "line",
    [
        b"00000001 6b86\n"[:-1],  # no newline: partial
        b"00000002 6b86b273\n",  # payload of record 1 under number 2
        b"0000001 6b86b273\n",  # number too short
        b"00000001\n",  # no payload
        b"00000001 \n",
        b"garbage garbage\n",
        b"00000000 5feceb66\n",  # record numbers start at 1
        b"\n",
    ],
)
def test_parse_record_rejects(line: bytes) -> None:
    with pytest.raises(CorruptRecord):
        parse_record(line)


def test_parse_last_number() -> None:
    assert parse_last_number(b"") == 0
    assert parse_last_number(records(1, 2, 3)) == 3
    # A torn trailing line is no record: the last complete one counts.
    assert parse_last_number(records(1, 2) + record_line(3)[:20]) == 2
    assert parse_last_number(record_line(1)[:5]) == 0
    with pytest.raises(CorruptRecord):
        parse_last_number(records(1) + b"junk\n")
    # A tail read from the middle of the file: its cut first line is never used.
    tail = records(1, 2, 3)[10:]
    assert parse_last_number(tail, from_start=False) == 3
    with pytest.raises(CorruptRecord):
        parse_last_number(record_line(3)[4:], from_start=False)
    with pytest.raises(CorruptRecord):
        parse_last_number(b"abc", from_start=False)


def test_parse_acks() -> None:
    assert parse_acks(b"") == ([], 0)
    assert parse_acks(acks(1, 2, 3)) == ([1, 2, 3], 0)
    assert parse_acks(b"1\nx\n3\n") == ([1, 3], 1)
    assert parse_acks(b"1\n2\n3") == ([1, 2], 1)  # an ack cut by a kill is not an ack


def test_verify_good_and_unacked_tail() -> None:
    v = verify_data(records(1, 2, 3, 4), acks(1, 2, 3))
    assert v.ok and (v.acked, v.records) == (3, 4)  # written but unacknowledged is fine
    assert verify_data(b"", b"").ok
    assert verify_data(records(1, 2, size=10), acks(1, 2)).ok  # size read from the line


def test_verify_missing_acked_record() -> None:
    v = verify_data(records(1, 2), acks(1, 2, 3, 4))
    assert not v.ok
    assert v.missing == [3, 4]
    assert v.summary()["missing"] == [3, 4]
    many = verify_data(b"", acks(*range(1, 30)))
    assert many.summary()["missing"] == list(range(1, 11))  # first ten only in the summary
    assert len(many.missing) == 29


def test_verify_corrupt_partial_and_order() -> None:
    v = verify_data(records(1) + b"00000002 garbage\n" + records(3), acks(1))
    assert not v.ok and v.corrupt == 1
    torn = verify_data(records(1, 2) + record_line(3)[:12], acks(1, 2))
    assert not torn.ok and torn.partial and torn.corrupt == 1
    dup = verify_data(records(1, 2, 2, 3), acks(1, 2, 3))
    assert not dup.ok and dup.out_of_order == 2
    gap = verify_data(records(1, 3), acks(1, 3))
    assert not gap.ok and gap.out_of_order == 1


def test_verify_bad_and_unordered_acks() -> None:
    assert verify_data(records(1, 2), b"1\nzz\n").bad_acks == 1
    twice = verify_data(records(1, 2), acks(1, 2, 2))  # two writers acking the same number
    assert not twice.ok and twice.acks_unordered == 1


# ---------------------------------------------------------------------------
# real processes

DEADLINE = 60.0  # only to turn a hang into a failure; nothing here is timed


def wait_for(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def writer(*args: str) -> subprocess.CompletedProcess[str]:
    # cwd "/" like inside a lab node; -P keeps it from importing a shadowing package.
    return subprocess.run(
        writer_argv(*args), cwd="/", capture_output=True, text=True, check=False, timeout=60
    )


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "records"
        self.acks = root / "acks"
        self.pidfile = root / "writer.pid"

    def start(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return writer(
            "start",
            "--file",
            str(self.file),
            "--acks",
            str(self.acks),
            "--pidfile",
            str(self.pidfile),
            "--interval",
            "0.001",
            *extra,
        )

    def stop(self) -> subprocess.CompletedProcess[str]:
        return writer("stop", "--pidfile", str(self.pidfile))

    def verify(self, file: Path | None = None) -> tuple[int, dict[str, object]]:
        done = writer("verify", "--file", str(file or self.file), "--acks", str(self.acks))
        return done.returncode, json.loads(done.stdout)

    def acked(self) -> int:
        return len(parse_acks(self.acks.read_bytes())[0]) if self.acks.exists() else 0

    def log(self) -> str:
        path = Path(str(self.pidfile) + ".log")
        return path.read_text() if path.exists() else ""


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    f = Files(tmp_path)
    yield f
    f.stop()  # never leave a writer behind, whatever the test did


def test_start_write_stop_verify(files: Files) -> None:
    done = files.start("--create")
    assert done.returncode == 0, done.stderr
    pid = read_pidfile(str(files.pidfile))
    assert pid is not None and is_writer(pid)
    wait_for(lambda: files.acked() >= 20, "20 acknowledged records")
    assert files.stop().returncode == 0
    assert not is_writer(pid)
    assert not files.pidfile.exists()
    rc, summary = files.verify()
    assert rc == 0, summary
    assert summary["acked"] >= 20 and summary["records"] >= summary["acked"]
    # Stopped means stopped: nothing is appended afterwards.
    size = files.file.stat().st_size
    assert files.verify()[0] == 0 and files.file.stat().st_size == size


def test_restart_continues_numbering(files: Files) -> None:
    assert files.start("--create").returncode == 0
    wait_for(lambda: files.acked() >= 5, "5 acks")
    files.stop()
    first = files.acked()
    assert files.start("--create").returncode == 0  # file exists: --create leaves it alone
    wait_for(lambda: files.acked() >= first + 5, "5 more acks")
    files.stop()
    rc, summary = files.verify()
    assert rc == 0 and summary["records"] >= first + 5


def test_start_twice_refused_and_stop_idempotent(files: Files) -> None:
    assert files.start("--create").returncode == 0
    pid = read_pidfile(str(files.pidfile))
    second = files.start("--create")
    assert second.returncode == 1
    assert len(second.stderr.strip().splitlines()) == 1 and str(pid) in second.stderr
    assert read_pidfile(str(files.pidfile)) == pid  # the running writer is untouched
    assert files.stop().returncode == 0
    assert files.stop().returncode == 0  # again: nothing to do
    assert writer("stop", "--pidfile", str(files.root / "never")).returncode == 0


def test_stop_never_signals_a_recycled_pid(files: Files) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        files.pidfile.write_text(f"{bystander.pid}\n")
        assert not is_writer(bystander.pid)
        assert files.stop().returncode == 0
        assert bystander.poll() is None  # still running
        assert not files.pidfile.exists()
        # A pidfile naming a process that is not a writer does not block a start either.
        files.pidfile.write_text(f"{bystander.pid}\n")
        assert files.start("--create").returncode == 0
        assert read_pidfile(str(files.pidfile)) != bystander.pid
    finally:
        bystander.kill()
        bystander.wait()


def test_never_creates_the_file_without_create(files: Files) -> None:
    assert files.start().returncode == 0
    wait_for(lambda: "ENOENT" in files.log(), "the writer to report ENOENT")
    assert not files.file.exists()  # no O_CREAT: an unmounted volume gets no stray file
    assert files.acked() == 0


def test_vanished_file_is_not_acknowledged(files: Files) -> None:
    """The records file disappears (the volume was unmounted): nothing more is acked."""
    assert files.start("--create").returncode == 0
    wait_for(lambda: files.acked() >= 10, "10 acks")
    away = files.root / "records.unmounted"
    os.rename(files.file, away)
    wait_for(lambda: "ENOENT" in files.log(), "ENOENT")
    acked_while_gone = files.acked()
    # Every ack so far, including one racing with the rename, is in the old file.
    rc, summary = files.verify(away)
    assert rc == 0, summary
    assert not files.file.exists()
    # Back again (remounted): the writer resumes from the file's own last record.
    os.rename(away, files.file)
    wait_for(lambda: files.acked() >= acked_while_gone + 10, "acks after the file returned")
    files.stop()
    rc, summary = files.verify()
    assert rc == 0, summary


def test_unwritable_file_is_not_acknowledged(files: Files) -> None:
    """The path stops being a writable file (EISDIR here; EROFS on a fenced volume)."""
    assert files.start("--create").returncode == 0
    wait_for(lambda: files.acked() >= 10, "10 acks")
    away = files.root / "records.readonly"
    os.rename(files.file, away)
    files.file.mkdir()  # root ignores file modes; a directory refuses O_WRONLY for anyone
    wait_for(lambda: "EISDIR" in files.log(), "EISDIR")
    files.stop()
    rc, summary = files.verify(away)
    assert rc == 0, summary
    assert summary["acked"] == files.acked()
    assert files.file.is_dir() and not any(files.file.iterdir())
    # verify on the directory path itself: every acknowledged record is missing there.
    shutil.rmtree(files.file)
    rc, summary = files.verify()
    assert rc == 1 and summary["missing"]


def test_verify_cli_reports_problems(files: Files) -> None:
    files.file.write_bytes(records(1, 2, 3))
    files.acks.write_bytes(acks(1, 2, 3))
    assert files.verify()[0] == 0
    files.acks.write_bytes(acks(1, 2, 3, 4))
    rc, summary = files.verify()
    assert rc == 1 and summary["missing"] == [4]
    files.acks.write_bytes(acks(1, 2))
    files.file.write_bytes(records(1, 2) + b"0000")
    rc, summary = files.verify()
    assert rc == 1 and summary["partial"] is True and summary["corrupt"] == 1


def test_run_exits_zero_on_sigterm(tmp_path: Path) -> None:
    f = tmp_path / "records"
    f.touch()
    a = tmp_path / "acks"
    proc = subprocess.Popen(
        writer_argv("run", "--file", str(f), "--acks", str(a), "--interval", "0.5"),
        cwd="/",
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: a.exists() and a.read_bytes().count(b"\n") >= 1, "the first ack")
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in err
    assert verify_data(f.read_bytes(), a.read_bytes()).ok


def test_module_runs_with_isolated_path() -> None:
    """`-P` from cwd "/" still finds the package (the editable install, not the cwd)."""
    done = subprocess.run(
        [sys.executable, "-P", "-m", "zflock.lab.writer", "--help"],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "verify" in done.stdout


# ---------------------------------------------------------------------------
# on a real ZFS dataset (a private zfs-fuse daemon; skipped where there is none)


def zfs_ok(node: ZfsNode, *argv: str) -> None:
    done = node.run(*argv)
    assert done.returncode == 0, done.stderr


def unmount(node: ZfsNode, dataset: str) -> None:
    # zfs-fuse calls a dataset busy for a moment after a file on it was closed.
    end = time.monotonic() + DEADLINE
    while True:
        done = node.run("zfs", "unmount", dataset)
        if done.returncode == 0:
            return
        if time.monotonic() > end:
            pytest.fail(f"cannot unmount {dataset}: {done.stderr}")
        time.sleep(0.1)


def test_fenced_and_unmounted_volume_acknowledges_nothing(
    zfs_node: ZfsNode, src_root: str, tmp_path: Path
) -> None:
    """What a move does to the source: readonly=on (EROFS), then unmount (ENOENT).

    Neither may be acknowledged, and the unmounted path must not receive a
    stray records file: only then does "acked => on the destination" hold.
    """
    vol = f"{src_root}/vol"
    zfs_ok(zfs_node, "zfs", "create", vol)
    mnt = zfs_node.path(vol)  # reachable from here through the daemon's /proc/PID/root
    f = Files(tmp_path)
    f.file = mnt / "records"
    assert f.start("--create").returncode == 0
    wait_for(lambda: f.acked() >= 10, "10 acks on the dataset")
    zfs_ok(zfs_node, "zfs", "set", "readonly=on", vol)
    wait_for(lambda: "EROFS" in f.log(), "EROFS on the fenced dataset")
    fenced = f.acked()
    unmount(zfs_node, vol)
    wait_for(lambda: "ENOENT" in f.log(), "ENOENT on the unmounted path")
    assert not f.file.exists()  # nothing landed in the bare mountpoint directory
    assert f.acked() == fenced  # not one acknowledgement since the fence took hold
    f.stop()
    zfs_ok(zfs_node, "zfs", "mount", vol)
    rc, summary = f.verify()
    assert rc == 0, summary
    assert summary["acked"] == fenced
