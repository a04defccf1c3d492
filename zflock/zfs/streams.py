"""`zfs send` / `zfs receive` as async byte streams with bounded buffers.

Memory stays flat however large the stream: the send side's StreamReader
pauses the pipe beyond its limit, the receive side waits on drain(), and
stderr is kept only as its last STDERR_KEEP bytes.

A process is never left behind: leaving a stream early (an exception, a
cancellation, `abort()`, or just not reading to the end) kills it by its PID,
closes our ends of its pipes and reaps it. Closing the pipes matters for
zfs-fuse, whose daemon (not the `zfs` client) reads and writes the stream
through the passed file descriptors: only EOF/EPIPE on them stops it.

A stream lasts as long as its data, so it has no overall deadline; instead
each wait on the process (a read, a drain, the exit after EOF) must see
progress within the runner's `stall` seconds, or the stream is killed and
ZfsTimeout raised. A slow reader or writer on *our* side does not count:
only time spent waiting for `zfs` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType

from zflock.zfs.errors import ZfsError, ZfsTimeout, classify_error
from zflock.zfs.runner import Runner, close_transport, kill_and_reap

STDERR_KEEP = 64 * 1024
DEFAULT_CHUNK = 1 << 20
WRITE_SLICE = 1 << 20

Preflight = Callable[[], Awaitable[None]]


async def _collect_tail(reader: asyncio.StreamReader, keep: int) -> bytes:
    """Read a stream to EOF, keeping only its last `keep` bytes."""
    tail = bytearray()
    while chunk := await reader.read(65536):
        tail += chunk
        if len(tail) > keep:
            del tail[: len(tail) - keep]
    return bytes(tail)


class _Stream:
    """What SendStream and ReceiveStream share: process lifetime and stderr."""

    def __init__(self, runner: Runner, argv: Sequence[str], preflight: Preflight | None) -> None:
        self.runner = runner
        self.argv: tuple[str, ...] = tuple(argv)
        self._preflight = preflight
        self._proc: asyncio.subprocess.Process | None = None
        self._tails: list[asyncio.Task[bytes]] = []
        self._killed = False

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """PID of the `zfs` process (None before start)."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def process(self) -> asyncio.subprocess.Process:
        if self._proc is None:
            raise RuntimeError(f"stream `{' '.join(self.argv)}` not started; use `async with`")
        return self._proc

    async def _start(self, *, stdin: int) -> None:
        if self._proc is not None:
            raise RuntimeError("stream already started")
        if self._preflight is not None:
            await self._preflight()
        self._proc = await self.runner.spawn(
            self.argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._tails.append(asyncio.ensure_future(_collect_tail(self._proc.stderr, STDERR_KEEP)))

    async def _stderr_text(self) -> str:
        if not self._tails:
            return ""
        try:
            data = await asyncio.wait_for(asyncio.shield(self._tails[0]), timeout=5)
        except TimeoutError:
            return ""
        except asyncio.CancelledError:
            # The tail's task was cancelled: no stderr. Our own cancellation (a caller's
            # deadline) must go on, or the caller's deadline would pass unnoticed.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return ""
        return data.decode("utf-8", errors="replace")

    @asynccontextmanager
    async def _progress(self, waiting_for: str) -> AsyncIterator[None]:
        """Bound one wait on the process by the runner's `stall`: past it, kill the
        process (by PID) and raise ZfsTimeout."""
        stall = self.runner.stall
        try:
            async with asyncio.timeout(stall):
                yield
        except TimeoutError:
            self.kill()
            raise ZfsTimeout(
                f"`{' '.join(self.argv)}` {waiting_for} for {stall:g} s; killed",
                argv=self.argv,
            ) from None

    async def _wait_checked(self) -> None:
        """Wait for the process; raise its typed error if it failed."""
        proc = self.process
        async with self._progress("did not exit after its stream ended"):
            rc = await proc.wait()
        stderr = await self._stderr_text()
        self._close_pipes()
        if rc != 0:
            raise classify_error(self.argv, rc, stderr)

    def _close_pipes(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        close_transport(proc)  # see runner.close_transport: zfs-fuse holds the pipes

    def kill(self) -> None:
        """Kill the process by its PID now (reaped on exit of the `async with`)."""
        self._killed = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        self._close_pipes()

    async def _kill_and_reap(self) -> None:
        self._killed = True
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        # Close our pipe ends *before* waiting: asyncio's wait() returns only
        # once the pipes are closed too, and zfs-fuse's daemon, which holds the
        # write end of a send stream, stops writing only on EPIPE. Waiting
        # first deadlocks as soon as the pipe is full.
        self._close_pipes()
        if self._proc is not None:
            await kill_and_reap(self._proc)
        for task in self._tails:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class SendStream(_Stream):
    """`async with zfs.send(...) as s:` runs `zfs send`; read with `s.read(n)` or `async for`.

    Reading to EOF waits for the process and raises its typed error (with
    stderr) if it failed, so a truncated stream is never mistaken for a
    complete one. Leaving the block before EOF kills the process.
    """

    def __init__(
        self, runner: Runner, argv: Sequence[str], *, preflight: Preflight | None = None
    ) -> None:
        super().__init__(runner, argv, preflight)
        self.bytes_read = 0
        self._eof = False

    async def __aenter__(self) -> SendStream:
        await self._start(stdin=asyncio.subprocess.DEVNULL)
        return self

    async def read(self, n: int = DEFAULT_CHUNK) -> bytes:
        """Up to n bytes; b"" at the end of a successful stream."""
        if self._eof:
            return b""
        stdout = self.process.stdout
        assert stdout is not None
        async with self._progress("sent no byte"):
            data = await stdout.read(n)
        if data:
            self.bytes_read += len(data)
            return data
        self._eof = True
        await self._wait_checked()
        return b""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        if exc_type is not None or not self._eof or self._killed:
            await self._kill_and_reap()
            return
        # EOF was reached by read(), which already waited and checked.
        self._close_pipes()


class ReceiveStream(_Stream):
    """`async with zfs.receive(...) as r:` runs `zfs receive`; feed it with `await r.write(data)`.

    Leaving the block normally closes stdin, waits and raises the typed
    error if the receive failed. An exception in the block, or `abort()`,
    kills the process instead, so a partial stream is never committed.
    """

    def __init__(
        self, runner: Runner, argv: Sequence[str], *, preflight: Preflight | None = None
    ) -> None:
        super().__init__(runner, argv, preflight)
        self.bytes_written = 0

    async def __aenter__(self) -> ReceiveStream:
        await self._start(stdin=asyncio.subprocess.PIPE)
        proc = self.process
        assert proc.stdout is not None
        # `receive -v` talks on stdout; drain it so it can never block the process.
        self._tails.append(asyncio.ensure_future(_collect_tail(proc.stdout, STDERR_KEEP)))
        return self

    async def write(self, data: bytes) -> None:
        if self._killed:
            raise ZfsError(f"`{' '.join(self.argv)}` was aborted", argv=self.argv)
        stdin = self.process.stdin
        assert stdin is not None
        try:
            # In slices: the pipe transport copies what the pipe cannot take at
            # once, so a large chunk written whole would be held twice.
            view = memoryview(data)
            for start in range(0, len(view), WRITE_SLICE):
                stdin.write(view[start : start + WRITE_SLICE])
                async with self._progress("took no byte"):
                    await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            # The receive died mid-stream: its stderr says why.
            await self._wait_checked()
            raise ZfsError(
                f"`{' '.join(self.argv)}` stopped reading its stream (exit status 0)",
                argv=self.argv,
                returncode=self.returncode,
            ) from None
        self.bytes_written += len(data)

    def abort(self) -> asyncio.Future[None]:
        """Kill the receive now (by PID) and close its stdin.

        Awaiting the result is optional: it waits until the process is reaped.
        """
        self.kill()
        return asyncio.ensure_future(self._kill_and_reap())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        if exc_type is not None or self._killed:
            await self._kill_and_reap()
            return
        stdin = self._proc.stdin
        assert stdin is not None
        stdin.close()
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                async with self._progress("did not take the end of its stream"):
                    await stdin.wait_closed()
            await self._wait_checked()
        except BaseException:
            await self._kill_and_reap()
            raise


async def pipe(
    send: SendStream,
    receive: ReceiveStream,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Copy a send stream into a receive stream; return the bytes copied.

    Streams not yet started are started (receive first, so the receiver is
    ready) and finished here; started ones are left to their `async with`.
    `on_progress` gets the running total of bytes copied after each chunk.
    A failure on either side kills both processes and raises the typed
    error of the side that failed.
    """
    async with contextlib.AsyncExitStack() as stack:
        if not receive.started:
            await stack.enter_async_context(receive)
        if not send.started:
            await stack.enter_async_context(send)
        total = 0
        try:
            while chunk := await send.read(chunk_size):
                await receive.write(chunk)
                total += len(chunk)
                if on_progress is not None:
                    on_progress(total)
        except BaseException:
            # Whoever started them, neither side may outlive a failed copy.
            send.kill()
            receive.kill()
            raise
    return total
