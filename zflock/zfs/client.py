"""`Zfs`: every `zfs`/`zpool` operation zflock performs, with typed results and errors.

Names are validated before anything runs (InvalidName); failures come back
as the typed errors of zflock.zfs.errors. Features the running ZFS may lack
are checked against the capability probe and refused with Unsupported.

The operations live in one module per concern, each a class over ZfsCore:

- core.py: the runner, the capability probe, reading (exists, get, lists);
- mounting.py: mount, unmount, zfs-fuse's transient "busy";
- datasets.py: set, inherit, create, destroy, snapshot, rollback, rename;
- transfer.py: send and receive streams, estimates, resume tokens;
- protection.py: holds and bookmarks;
- pools (here, over pool.py): create, export, destroy, list.
"""

from __future__ import annotations

from collections.abc import Mapping

from zflock.zfs import pool as _pool
from zflock.zfs.argv import receive_argv, send_argv, validate_resume_token
from zflock.zfs.datasets import DatasetOps
from zflock.zfs.mounting import MOUNT_RETRY_SECONDS
from zflock.zfs.protection import ProtectionOps
from zflock.zfs.transfer import TransferOps
from zflock.zfs.types import PoolInfo

__all__ = ["MOUNT_RETRY_SECONDS", "Zfs", "receive_argv", "send_argv", "validate_resume_token"]

_EMPTY: Mapping[str, str] = {}


class Zfs(DatasetOps, TransferOps, ProtectionOps):
    """The ZFS of one node, reached through `runner` (see the module docstring)."""

    async def create_pool(
        self,
        name: str,
        vdev: str,
        *,
        mountpoint: str | None = None,
        properties: Mapping[str, str] = _EMPTY,
    ) -> None:
        """`zpool create -f` (properties are pool properties, `-o`)."""
        await _pool.create_pool(
            self.runner, name, vdev, mountpoint=mountpoint, properties=properties
        )

    async def export_pool(self, name: str, *, force: bool = False) -> None:
        """`zpool export` (on zfs-fuse its filesystems are unmounted first; see destroy)."""
        argv = _pool.export_pool_argv(name, force=force)
        await self._unmounted_on_zfs_fuse(name, argv, remount_as=None)

    async def destroy_pool(self, name: str, *, force: bool = False) -> None:
        """`zpool destroy` (on zfs-fuse its filesystems are unmounted first: it
        calls a pool "busy" when the command has to unmount them itself)."""
        argv = _pool.destroy_pool_argv(name, force=force)
        await self._unmounted_on_zfs_fuse(name, argv, remount_as=None)

    async def pool_info(self, name: str) -> PoolInfo:
        """Sizes are exact where `zpool list -p` exists, else rounded as zpool prints them."""
        caps = await self.capabilities()
        return await _pool.pool_info(self.runner, name, parsable=caps.list_parsable)

    async def list_pools(self) -> list[PoolInfo]:
        caps = await self.capabilities()
        return await _pool.list_pools(self.runner, parsable=caps.list_parsable)
