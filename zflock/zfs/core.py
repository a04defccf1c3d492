"""The base of `Zfs`: the runner, the capability probe, and reading datasets.

The operations are grouped by concern in sibling modules (mounting.py,
datasets.py, transfer.py, protection.py), each a class over this one;
client.py puts them together as `Zfs`, the one interface the rest of zflock
uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from zflock.zfs.argv import validate_any_name
from zflock.zfs.errors import DatasetNotFound, Unsupported
from zflock.zfs.names import (
    InvalidName,
    validate_component,
    validate_dataset_name,
    validate_property_name,
)
from zflock.zfs.parse import (
    GET_FIELDS,
    SNAPSHOT_PROPERTIES,
    PropertyTable,
    parse_get,
    parse_names,
    parse_snapshots,
    property_or_none,
)
from zflock.zfs.probe import probe_capabilities
from zflock.zfs.runner import Runner
from zflock.zfs.types import Capabilities, Dataset, DatasetState, Snapshot

DATASET_TYPES = frozenset({"filesystem", "volume", "snapshot", "bookmark"})


class ZfsCore:
    """The ZFS of one node, reached through `runner`: probing and reading."""

    def __init__(
        self, runner: Runner | None = None, *, capabilities: Capabilities | None = None
    ) -> None:
        # `capabilities` lets a caller that already probed this node skip the probe.
        # No asyncio primitives are held here, so one Zfs may serve several event loops.
        self.runner = runner if runner is not None else Runner()
        self._capabilities = capabilities

    # -- capabilities -------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        """What this ZFS supports (probed once, then cached; a race only probes twice)."""
        if self._capabilities is None:
            self._capabilities = await probe_capabilities(self.runner)
        return self._capabilities

    async def _require(self, feature: str, argv: Sequence[str]) -> None:
        caps = await self.capabilities()
        if not getattr(caps, feature):
            raise Unsupported(
                f"{caps.implementation} does not support {feature.replace('_', ' ')} "
                f"(needed for `{' '.join(argv)}`)",
                argv=argv,
            )

    # -- reading ------------------------------------------------------------

    async def _get(
        self,
        name: str,
        properties: Sequence[str],
        *,
        recursive: bool = False,
        depth: int | None = None,
    ) -> PropertyTable:
        argv = ["zfs", "get", "-H", "-p", "-o", GET_FIELDS]
        if recursive:
            argv.append("-r")
        if depth is not None:
            argv += ["-d", str(depth)]
        argv += [",".join(properties), name]
        done = await self.runner.run(argv)
        return parse_get(done.stdout_text)

    async def exists(self, name: str) -> bool:
        """Whether the dataset, snapshot or bookmark exists."""
        validate_any_name(name)
        try:
            await self.runner.run(["zfs", "get", "-H", "-o", "value", "type", name])
        except DatasetNotFound:
            return False
        return True

    async def list_datasets(
        self,
        root: str,
        properties: Sequence[str] = (),
        *,
        recursive: bool = True,
        types: Sequence[str] = ("filesystem",),
        depth: int | None = None,
    ) -> list[Dataset]:
        """`root` and (recursive) its descendants of the given types, with raw property values.

        One `zfs get` (it has exact -p numbers everywhere); types are filtered
        here because zfs-fuse's `zfs get` has no `-t`. `depth` 1 reads `root` and
        its children without walking their snapshots (the scheduler's rescan).
        """
        validate_dataset_name(root)
        for t in types:
            if t not in DATASET_TYPES:
                raise InvalidName(f"invalid dataset type {t!r}: use one of {sorted(DATASET_TYPES)}")
        for prop in properties:
            validate_property_name(prop)
        wanted = ["type", *(p for p in properties if p != "type")]
        table = await self._get(root, wanted, recursive=recursive, depth=depth)
        result: list[Dataset] = []
        for name, props in table.items():
            dtype = props.get("type")
            if dtype is None or dtype.value not in types:
                continue
            values = {p: pv.value for p, pv in props.items() if p in properties and pv.is_set}
            result.append(Dataset(name=name, type=dtype.value, properties=values))
        return result

    async def list_snapshots(self, dataset: str) -> list[Snapshot]:
        """The dataset's own snapshots (not its children's), oldest first."""
        validate_dataset_name(dataset)
        table, order = await self._with_snapshots(dataset, ())
        return parse_snapshots(dataset, table, order=order)

    async def _with_snapshots(
        self, dataset: str, properties: Sequence[str]
    ) -> tuple[PropertyTable, list[str] | None]:
        """`properties` and the snapshots' own for the dataset and its snapshots (one
        `zfs get -r -d 1`), and, where there is no createtxg, the creation order."""
        caps = await self.capabilities()
        wanted = [*dict.fromkeys([*properties, *SNAPSHOT_PROPERTIES])]
        if caps.createtxg:
            return await self._get(dataset, wanted, recursive=True, depth=1), None
        wanted.remove("createtxg")
        # Without createtxg, creation order is the order `zfs list -t snapshot` prints.
        listing = ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", dataset]
        table, done = await asyncio.gather(
            self._get(dataset, wanted, recursive=True, depth=1), self.runner.run(listing)
        )
        return table, [n.split("@", 1)[1] for n in parse_names(done.stdout_text) if "@" in n]

    async def dataset_state(self, dataset: str, properties: Sequence[str]) -> DatasetState | None:
        """The dataset's `properties` and its own snapshots in one command; None if absent.

        A replication step reads both several times (the replica's state at connect,
        before and after a receive, at pruning); on zfs-fuse every command is a
        process and a round trip to the daemon, and those commands were most of a
        scheduled run's cost (docs/benchmarks.md, "Continuous replication at scale").
        The snapshots' rows repeat the dataset's user properties (inherited); only
        the dataset's own row is read for `properties`.
        """
        validate_dataset_name(dataset)
        for prop in properties:
            validate_property_name(prop)
        try:
            table, order = await self._with_snapshots(dataset, properties)
        except DatasetNotFound:
            return None
        return _state(dataset, properties, table, order)

    async def dataset_state_with(
        self, dataset: str, properties: Sequence[str], snapshots: Sequence[str]
    ) -> DatasetState | None:
        """`dataset_state`, but with only the named snapshots, read by name in the same
        command instead of walking all of them; None if the dataset is absent.

        For a decision that needs one or two known snapshots (a receive's base, the
        snapshot it just received): on zfs-fuse a walk costs the daemon about a
        millisecond per snapshot, and a copy holds up to a hundred or more
        (docs/benchmarks.md, "What a replication run costs"). The snapshots' `index`
        is their place in this read, not in the dataset. If a named snapshot does not
        exist, every snapshot is read (`dataset_state`), so the caller sees what is
        there and says what is missing itself.
        """
        validate_dataset_name(dataset)
        for prop in properties:
            validate_property_name(prop)
        for snap in snapshots:
            validate_component(snap, "snapshot name")
        caps = await self.capabilities()
        wanted = [*dict.fromkeys([*properties, *SNAPSHOT_PROPERTIES])]
        if not caps.createtxg:
            wanted.remove("createtxg")
        names = [dataset, *(f"{dataset}@{snap}" for snap in snapshots)]
        argv = ["zfs", "get", "-H", "-p", "-o", GET_FIELDS, ",".join(wanted), *names]
        try:
            table = parse_get((await self.runner.run(argv)).stdout_text)
        except DatasetNotFound:
            return await self.dataset_state(dataset, properties)
        return _state(dataset, properties, table, list(snapshots))

    async def get(self, name: str, properties: Sequence[str]) -> dict[str, str | None]:
        """Raw (-p) values; None for a property that is unset ("-") or not reported."""
        validate_any_name(name)
        if not properties:
            return {}
        for prop in properties:
            validate_property_name(prop)
        table = await self._get(name, list(properties))
        return {prop: property_or_none(table, name, prop) for prop in properties}


def _state(
    dataset: str, properties: Sequence[str], table: PropertyTable, order: list[str] | None
) -> DatasetState:
    """The dataset's `properties` (its own row) and its snapshots in `table`."""
    own = table.get(dataset, {})
    return DatasetState(
        name=dataset,
        values={prop: property_or_none(table, dataset, prop) for prop in properties},
        local=frozenset(p for p, pv in own.items() if pv.source == "local" and pv.is_set),
        snapshots=parse_snapshots(dataset, table, order=order),
    )
