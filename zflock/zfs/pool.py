"""`zpool` commands: create, inspect, export, destroy a pool."""

from __future__ import annotations

from collections.abc import Mapping

from zflock.zfs.errors import DatasetNotFound
from zflock.zfs.names import (
    InvalidName,
    validate_pool_name,
    validate_property_name,
    validate_property_value,
)
from zflock.zfs.parse import POOL_FIELDS, format_properties, parse_pool_list
from zflock.zfs.runner import Runner
from zflock.zfs.types import PoolInfo


def create_pool_argv(
    name: str, vdev: str, *, mountpoint: str | None, properties: Mapping[str, str]
) -> list[str]:
    validate_pool_name(name)
    if not vdev or vdev.startswith("-"):
        raise InvalidName(f"invalid vdev {vdev!r} for pool {name!r}: give a file or device path")
    for key, value in properties.items():
        validate_property_name(key)
        validate_property_value(key, value)
    argv = ["zpool", "create", "-f", *format_properties("-o", properties)]
    if mountpoint is not None:
        argv += ["-m", mountpoint]
    return [*argv, name, vdev]


async def create_pool(
    runner: Runner,
    name: str,
    vdev: str,
    *,
    mountpoint: str | None = None,
    properties: Mapping[str, str] = {},
) -> None:
    await runner.run(create_pool_argv(name, vdev, mountpoint=mountpoint, properties=properties))


def export_pool_argv(name: str, *, force: bool = False) -> list[str]:
    validate_pool_name(name)
    return ["zpool", "export", *(["-f"] if force else []), name]


def destroy_pool_argv(name: str, *, force: bool = False) -> list[str]:
    validate_pool_name(name)
    return ["zpool", "destroy", *(["-f"] if force else []), name]


def _list_argv(parsable: bool, names: tuple[str, ...]) -> list[str]:
    return ["zpool", "list", "-H", *(["-p"] if parsable else []), "-o", POOL_FIELDS, *names]


async def list_pools(runner: Runner, *, parsable: bool) -> list[PoolInfo]:
    done = await runner.run(_list_argv(parsable, ()))
    return parse_pool_list(done.stdout_text, parsable=parsable)


async def pool_info(runner: Runner, name: str, *, parsable: bool) -> PoolInfo:
    validate_pool_name(name)
    done = await runner.run(_list_argv(parsable, (name,)))
    pools = parse_pool_list(done.stdout_text, parsable=parsable)
    if len(pools) != 1:
        raise DatasetNotFound(f"pool {name!r} not found", argv=done.argv)
    return pools[0]
