"""Streams between nodes: send, receive, size estimates, and resuming a cut stream."""

from __future__ import annotations

from zflock.zfs.argv import receive_argv, send_argv, validate_resume_token
from zflock.zfs.core import ZfsCore
from zflock.zfs.names import validate_dataset_name
from zflock.zfs.parse import parse_resume_token_contents, parse_send_estimate
from zflock.zfs.streams import ReceiveStream, SendStream
from zflock.zfs.types import ResumeTokenInfo, resume_token_value


class TransferOps(ZfsCore):
    def send(
        self,
        snapshot: str,
        *,
        base: str | None = None,
        intermediates: bool = False,
        replicate: bool = False,
        props: bool = False,
        resume_token: str | None = None,
    ) -> SendStream:
        """`zfs send` as a stream; use `async with`. Options are checked here, features at start."""
        argv = send_argv(
            snapshot,
            base=base,
            intermediates=intermediates,
            replicate=replicate,
            props=props,
            resume_token=resume_token,
        )

        async def preflight() -> None:
            if resume_token is not None:
                await self._require("resume_tokens", argv)
            if base is not None and "#" in base:
                await self._require("bookmarks", argv)

        return SendStream(self.runner, argv, preflight=preflight)

    def receive(
        self,
        dataset: str,
        *,
        force: bool = False,
        unmounted: bool = False,
        resumable: bool = False,
    ) -> ReceiveStream:
        """`zfs receive` as a stream; use `async with`. `-F` only with force=True."""
        argv = receive_argv(dataset, force=force, unmounted=unmounted, resumable=resumable)

        async def preflight() -> None:
            if unmounted:
                await self._require("receive_unmounted", argv)
            if resumable:
                await self._require("resume_tokens", argv)

        return ReceiveStream(self.runner, argv, preflight=preflight)

    async def estimate_send_size(self, snapshot: str, *, base: str | None = None) -> int | None:
        """Bytes `zfs send` would produce (send -nP), or None where ZFS cannot estimate."""
        argv = send_argv(snapshot, base=base)
        if not (await self.capabilities()).send_estimates:
            return None
        done = await self.runner.run([argv[0], argv[1], "-n", "-P", *argv[2:]])
        return parse_send_estimate(done.stdout_text) or parse_send_estimate(done.stderr_text)

    # -- resume (OpenZFS; see Capabilities) -------------------------------------

    async def resume_token(self, dataset: str) -> str | None:
        """The `receive_resume_token` of a partly received dataset, or None.

        None also where the ZFS has no resumable receive (zfs-fuse): no
        partial receive state can exist there.
        """
        validate_dataset_name(dataset)
        if not (await self.capabilities()).resume_tokens:
            return None
        return resume_token_value(
            (await self.get(dataset, ["receive_resume_token"]))["receive_resume_token"]
        )

    async def describe_resume_token(self, token: str) -> ResumeTokenInfo | None:
        """Decode a resume token (`zfs send -nvt`): which snapshot it completes, from where.

        Works on either side: the contents are printed before ZFS looks for the
        snapshot, so the exit status (non-zero where the snapshot is not local)
        is ignored. None if this ZFS cannot decode it.
        """
        argv = ["zfs", "send", "-n", "-v", "-t", validate_resume_token(token)]
        await self._require("resume_tokens", argv)
        done = await self.runner.run(argv, check=False)
        return parse_resume_token_contents(done.stdout_text)

    async def abort_resumable_receive(self, dataset: str) -> None:
        """Discard the partial state of an interrupted `receive -s` (`zfs receive -A`)."""
        validate_dataset_name(dataset)
        argv = ["zfs", "receive", "-A", dataset]
        await self._require("resume_tokens", argv)
        await self.runner.run(argv)
