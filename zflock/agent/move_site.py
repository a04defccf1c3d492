"""This node's copy in a move, whichever side it is on: its marker, its hooks, and the
environment they run in. Shared by the source (move_source.py), the recovery of an
interrupted move (move_recovery.py) and the destination (move_destination.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from zflock.agent.hooks import run_hooks, validate_hook
from zflock.agent.link import LinkServices
from zflock.agent.locks import VolumeLocks
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig
from zflock.errors import UsageError, ZflockError
from zflock.move.endpoint import SnapTaken
from zflock.move.marker import PROP_MOVE, BadMarker, Marker, parse_marker
from zflock.move.zfs_source import ZfsSource
from zflock.rpc.messages import SnapshotInfo
from zflock.zfs import Zfs

# Hooks given on the command line, by kind ("pre_cutover", "rollback", "post_cutover").
CliHooks = dict[str, list[list[str]]]


@dataclass(frozen=True)
class MoveSite:
    """What every part of a move on this node works with."""

    links: LinkServices
    locks: VolumeLocks

    @property
    def config(self) -> AgentConfig:
        return self.links.config

    @property
    def zfs(self) -> Zfs:
        return self.links.zfs

    @property
    def volumes(self) -> Volumes:
        return self.links.volumes

    async def marker(self, name: str) -> Marker | None:
        """The move marker on this node's copy of `name` (None: no move in progress)."""
        value = (await self.zfs.get(self.config.dataset(name), [PROP_MOVE]))[PROP_MOVE]
        try:
            return parse_marker(value)
        except BadMarker as exc:
            raise ZflockError(
                f"{self.config.dataset(name)} has a damaged zflock:move ({exc}); inspect it and "
                "clear it with `zfs inherit zflock:move` only if no move is in progress"
            ) from None

    def context(self, name: str, source: str, destination: str, epoch: int) -> dict[str, str]:
        """The hooks' environment (ZFLOCK_VOLUME, ...), by variable name without the prefix."""
        return {
            "volume": name,
            "mountpoint": self.config.mountpoint(name),
            "source": source,
            "destination": destination,
            "epoch": str(epoch),
        }

    def source(
        self,
        name: str,
        context: dict[str, str],
        cli_hooks: CliHooks,
        take: Callable[[], Awaitable[SnapshotInfo]] | None = None,
    ) -> ZfsSource:
        """This node's copy as the source of a move (move.endpoint.SourceSide). `take`:
        how its snapshots are taken (a move's: its link's, ReplicationLink.snapshot,
        which knows the copy from the round before); else Volumes.snapshot."""

        async def snapshot() -> SnapTaken:
            snap = await (take() if take is not None else self.volumes.snapshot(name))
            return SnapTaken(name=snap.snapshot, guid=snap.guid)

        async def hooks(kind: str) -> None:
            await self.run_hooks(name, kind, cli_hooks.get(kind, []), context)

        config = self.config
        return ZfsSource(
            self.zfs, config.dataset(name), name, snapshot, hooks, config.mountpoint(name)
        )

    async def run_hooks(
        self, name: str, kind: str, extra: list[list[str]], context: dict[str, str]
    ) -> None:
        """This node's configured hook of `kind` for the volume, then the command line's."""
        configured = self.config.hooks_for(name)
        commands = [c for c in (getattr(configured, kind),) if c]
        await run_hooks(kind, [*commands, *extra], context, configured.timeout)

    def hooks_arg(self, hooks: Sequence[Sequence[str]], flag: str) -> list[list[str]]:
        """Hooks from the command line, checked; refused unless this node runs such hooks."""
        checked = [validate_hook(h, flag) for h in hooks]
        if checked and not self.config.allow_client_hooks:
            raise UsageError(
                f"node {self.config.node} does not run hooks given on the command line "
                f"({flag}); set allow_client_hooks = true in its agent.toml, or configure "
                "the hooks there"
            )
        return checked
