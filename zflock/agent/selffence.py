"""Self-fencing: the agent's majority lease, and what it does to its primaries by it.

The decisions are pure (zflock/cluster/lease.py); this is the loop around them:

* one pinger per other inventory node: a `ping` (no ZFS, over a kept SSH
  connection) every `Timing.interval` seconds, each with `Timing.deadline`;
  each answered ping, and each ping a peer sends here from its inventory
  address, is recorded as a contact (`contact` and `heard`: cluster/lease.py);
* the watcher: after the first round of pings (bounded), it compares epochs
  with every node for this node's primaries ("the returning primary", before
  anything else it does), then every half interval evaluates the lease and,
  only when something may be due, lists this node's copies and acts on each:
  fence, unfence, or mark stale (the ZFS side: selffence_zfs.py). A fence that
  is due is re-applied on every tick: a move that rolls back cannot leave the
  copy writable. Each step takes the volume's lock, or acts without it after
  LOCK_WAIT seconds (making a copy read-only is always safe).

`SelfFence.unreachable_for(node)` is what `zflock failover` asks the target about.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncssh

from zflock.agent.locks import VolumeLocks
from zflock.agent.selffence_zfs import CopyFencing
from zflock.agent.volumes import Volumes
from zflock.cluster.config import AgentConfig, Inventory, NodeEntry, load_inventory
from zflock.cluster.lease import (
    Comparison,
    Contacts,
    Decision,
    FenceReason,
    Lease,
    LocalCopy,
    Timing,
    decide,
    decide_at_start,
    evaluate,
    fence_time,
    parse_fenced,
)
from zflock.cluster.lease import unreachable_for as _unreachable_for
from zflock.errors import ZflockError
from zflock.rpc import messages as m
from zflock.rpc.client import AgentClient
from zflock.rpc.cluster import Cluster
from zflock.rpc.selffence_messages import LeaseStatus, Ping, Pong, Unreachable
from zflock.zfs import Zfs
from zflock.zfs.holders import STOP_BOUND

log = logging.getLogger("zflock.agent.selffence")
# How long a fence waits for the volume's lock before fencing without it (a long
# replication or move holds it; making a copy read-only is always safe).
LOCK_WAIT = 2.0


def _fence_time(config: AgentConfig, readonly_fences_open_files: bool) -> float:
    """`fence_time` for this node's configuration (cluster/lease.py): the longest stop
    hook any volume has here, and whether holders are stopped."""
    hooks = [config.hooks, *config.volume_hooks.values()]
    stop_hook = max((h.timeout for h in hooks if h.pre_cutover), default=0.0)
    holders = STOP_BOUND if config.failover.stop_holders else 0.0
    return fence_time(readonly_fences_open_files, stop_hook, holders)


class SelfFence:
    """The lease and its actions for one agent (module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        zfs: Zfs,
        locks: VolumeLocks,
        volumes: Volumes,
        peer_key: Callable[[], asyncssh.SSHKey | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.zfs = zfs
        self.locks = locks
        self.volumes = volumes
        self._peer_key = peer_key
        self._clock = clock
        # Until the ZFS is known, the longer fence of the two (zfs-fuse's): see _watch.
        self.timing = Timing(config.failover.self_fence_after, _fence_time(config, False))
        self.me = config.node
        self._started = clock()
        self._contact: dict[str, float] = {}
        self._heard: dict[str, float] = {}
        self._nodes: frozenset[str] = frozenset({self.me})
        self._inventory: Inventory | None = None
        self._entries: dict[str, NodeEntry] = {}
        self._pingers: dict[str, asyncio.Task[None]] = {}
        self._first_round: dict[str, asyncio.Event] = {}
        self._wake: dict[str, asyncio.Event] = {}  # a peer's ping: ping it back now
        self._watcher: asyncio.Task[None] | None = None
        self._unconfirmed: set[str] = set()  # writable primaries not yet compared with all
        self.fenced: set[str] = set()  # volumes this node holds fenced (or stale, this run)
        self.ready = asyncio.Event()  # set once the start-up comparison was made
        self.actions = CopyFencing(config, zfs)

    # -- what others ask ---------------------------------------------------------------

    def operations(self) -> dict[str, Callable[[Any, Any], Any]]:
        return {"ping": self.ping, "lease_status": self.lease_status}

    async def ping(self, args: Ping, call: Any) -> Pong:
        # A ping from a peer proves that the peer reaches us, not that we reach it: it
        # counts as heard (a failover asking us then waits: the safe direction), never
        # as contact for our own lease. A link that carries only the peer's pings to us
        # would otherwise keep this primary unfenced while that peer, hearing no
        # answers, joins a majority for failover (found by the lease property test).
        # Counted only from that node's own address, so no other client can delay a
        # failover.
        entry = self._entries.get(args.node)
        if entry is not None and getattr(call, "peer", None) == entry.address:
            now = self._clock()
            self._saw(args.node, None, now)
            # No contact of our own lately (say the peer just started, after our last
            # ping failed): ping it back now rather than at the next interval, so the
            # lease does not wait a whole interval for what this ping suggests.
            last = self._contact.get(args.node)
            wake = self._wake.get(args.node)
            if wake is not None and (last is None or now - last > self.timing.interval):
                wake.set()
        return Pong(node=self.me)

    def _saw(self, node: str, contact: float | None, heard: float) -> None:
        if contact is not None:
            self._contact[node] = max(self._contact.get(node, contact), contact)
        self._heard[node] = max(self._heard.get(node, heard), heard)

    def contacts(self) -> Contacts:
        return Contacts(
            me=self.me, nodes=self._nodes, started=self._started,
            contact=dict(self._contact), heard=dict(self._heard),
        )  # fmt: skip

    def lease(self) -> Lease:
        return evaluate(self.contacts(), self.timing, self._clock())

    @property
    def self_fence_after(self) -> float:
        return self.timing.self_fence_after

    def unreachable_for(self, node: str) -> float | None:
        """Seconds since this agent last had an answer from `node` (since it started
        pinging, if never); None when `node` answers now."""
        return _unreachable_for(self.contacts(), self.timing, node, self._clock())

    async def lease_status(self, args: m.Empty, call: object) -> LeaseStatus:
        now = self._clock()
        lease = self.lease()
        lost = None if lease.held else (-1.0 if lease.since is None else lease.lost_for(now))
        peers = [Unreachable(n, self.unreachable_for(n)) for n in sorted(self._nodes - {self.me})]
        return LeaseStatus(
            node=self.me, active=lease.active, held=lease.held, lost_for=lost,
            self_fence_after=self.self_fence_after, margin=self.timing.margin, peers=peers,
            fenced=sorted(self.fenced),
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._started = self._clock()
        self._reload_inventory()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="selffence")

    async def stop(self) -> None:
        tasks = [t for t in (self._watcher, *self._pingers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _reload_inventory(self) -> None:
        try:
            inventory = load_inventory(self.config.cluster)
        except ZflockError as exc:
            log.error("self-fencing cannot read the inventory: %s", exc)
            return  # keep the last one: the lease goes on with what it knew
        self._inventory = inventory
        self._entries = {n: e for n, e in inventory.nodes.items() if n != self.me}
        self._nodes = frozenset(inventory.nodes) | {self.me}
        for node, task in list(self._pingers.items()):
            if node not in self._entries:
                task.cancel()
                del self._pingers[node]
        loop = asyncio.get_running_loop()
        for node in self._entries:
            if node not in self._pingers:
                self._first_round.setdefault(node, asyncio.Event())
                self._wake.setdefault(node, asyncio.Event())
                self._pingers[node] = loop.create_task(self._pinger(node), name=f"ping {node}")

    # -- pinging -----------------------------------------------------------------------

    async def _pinger(self, node: str) -> None:
        client: AgentClient | None = None
        try:
            wake = self._wake[node]
            while True:
                sent = self._clock()
                wake.clear()
                try:
                    async with asyncio.timeout(self.timing.deadline):
                        if client is None:
                            key = self._peer_key()
                            if key is None:
                                raise ZflockError("no key to talk to peers yet")
                            client = AgentClient(
                                self._entries[node], key, timeout=self.timing.deadline
                            )
                            await client.connect()
                        await client.call("ping", Ping(node=self.me))
                    self._saw(node, sent, self._clock())
                except (ZflockError, TimeoutError, OSError, asyncssh.Error, KeyError) as exc:
                    log.debug("ping %s: %s", node, exc)
                    if client is not None:
                        await _close(client)
                        client = None
                self._first_round[node].set()
                # At most one ping per interval, unless a ping from that peer wakes it
                # (at most one per ping the peer sends: never a hot loop).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sent + self.timing.interval - self._clock()):
                        await wake.wait()
        finally:
            if client is not None:
                await _close(client)

    async def _first_round_done(self) -> None:
        """Every pinger has had one answer or one failure (each bounded by its deadline)."""
        events = [self._first_round[n] for n in self._entries if n in self._first_round]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self.timing.deadline + 1):
                await asyncio.gather(*(e.wait() for e in events))

    # -- watching ----------------------------------------------------------------------

    async def _watch(self) -> None:
        await self._guarded(self._refine_timing)
        await self._first_round_done()
        await self._guarded(self._start_check)
        self.ready.set()
        tick = min(self.timing.interval / 2, 1.0)
        while True:
            await asyncio.sleep(tick)
            self._reload_inventory()
            await self._guarded(self._tick)

    async def _refine_timing(self) -> None:
        # What `zflock failover` is told to wait: shorter where readonly=on is the fence.
        fences = (await self.zfs.capabilities()).readonly_fences_open_files
        self.timing = Timing(self.timing.self_fence_after, _fence_time(self.config, fences))

    async def _guarded(self, step: Callable[[], Any]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A watcher that died would leave primaries unfenced for good: log, go on.
            log.exception("self-fencing step failed; retrying on the next tick")

    async def _copies(self) -> list[tuple[LocalCopy, m.VolumeInfo]]:
        found = []
        for info in await self.volumes.list():
            copy = LocalCopy(
                name=info.name, volume_id=info.id, epoch=info.epoch, role=info.role,
                fenced=parse_fenced(info.fenced),
                moving=bool(info.move), stale=bool(info.stale),
            )  # fmt: skip
            found.append((copy, info))
        return found

    async def _compare(self, names: list[str]) -> Comparison:
        """Ask every other node for its copies of `names`: the highest epoch per volume id."""
        key = self._peer_key()
        if key is None or self._inventory is None:
            return Comparison(answered=frozenset(), epochs={})
        deadline = max(self.timing.deadline, 2.0)
        cluster = Cluster(self._inventory, key, timeout=deadline)
        results = await cluster.call_all(
            "list_volumes", m.ListVolumes(names=names), list(self._entries), deadline=deadline
        )
        answers = [(r.node, r.value.volumes) for r in results if r.ok]
        epochs: dict[str, int] = {}
        answered = set()
        for node, copies in answers:
            answered.add(node)
            for copy in copies:
                epochs[copy.id] = max(epochs.get(copy.id, 0), copy.epoch)
        return Comparison(answered=frozenset(answered), epochs=epochs)

    async def _start_check(self) -> None:
        """The returning primary: before anything else, compare epochs with every node."""
        copies = await self._copies()
        primaries = [c.name for c, _ in copies if c.role == "primary" and not c.moving]
        comparison = await self._compare(primaries) if primaries else None
        lease = self.lease()
        for copy, info in copies:
            decision = decide_at_start(copy, lease, comparison, self._nodes, self.me)
            await self._act(copy, info, decision)
            if copy.role == "primary" and not copy.moving and decision.action == "keep":
                if comparison is None or not comparison.complete(self._nodes, self.me):
                    self._unconfirmed.add(copy.name)

    async def _tick(self) -> None:
        lease = self.lease()
        if not (lease.fence_due or self.fenced or (self._unconfirmed and lease.held)):
            return  # the lease is held (or not yet due) and nothing waits: no ZFS at all
        copies = await self._copies()
        names = [c.name for c, _ in copies if c.name in self.fenced | self._unconfirmed]
        comparison = await self._compare(names) if names and lease.held else None
        for copy, info in copies:
            decision = decide(copy, lease, comparison, self._nodes, self.me)
            await self._act(copy, info, decision)
            if comparison is not None and comparison.complete(self._nodes, self.me):
                self._unconfirmed.discard(copy.name)
        present = {c.name for c, _ in copies}
        self.fenced &= present
        self._unconfirmed &= present

    # -- acting ------------------------------------------------------------------------

    async def _act(self, copy: LocalCopy, info: m.VolumeInfo, decision: Decision) -> None:
        if decision.action == "fence":
            await self._locked(copy.name, lambda: self._fence(copy, decision.fence_reason))
        elif decision.action == "unfence":
            await self._locked(copy.name, lambda: self._unfence(copy))
        elif decision.action == "stale":
            await self._locked(copy.name, lambda: self._stale(copy, info, decision.epoch))
        elif copy.fenced is not None:
            self.fenced.add(copy.name)
            if not info.readonly or info.mounted:
                # Still fenced, but something made it writable or mounted (a move that
                # rolled back, an operator): fence again, without the hooks.
                reason = copy.fenced.reason
                await self._locked(copy.name, lambda: self._fence(copy, reason))

    async def _locked(self, name: str, step: Callable[[], Any]) -> None:
        try:
            await asyncio.wait_for(self.locks.acquire(name, "self-fence", wait=True), LOCK_WAIT)
        except TimeoutError:
            log.warning("volume busy (%s); acting without its lock", self.locks.holder(name),
                        extra={"volume": name})  # fmt: skip
            self.locks.changed(name)  # what a replication remembers of it is void now
            await step()
            return
        try:
            await step()
        finally:
            self.locks.release(name)

    async def _fence(self, copy: LocalCopy, reason: FenceReason) -> None:
        await self.actions.fence(copy, reason)
        self.fenced.add(copy.name)

    async def _unfence(self, copy: LocalCopy) -> None:
        await self.actions.unfence(copy)
        self.fenced.discard(copy.name)

    async def _stale(self, copy: LocalCopy, info: m.VolumeInfo, epoch: int) -> None:
        self.fenced.add(copy.name)  # until it is marked: fenced first
        await self.actions.mark_stale(copy, epoch)
        self.fenced.discard(copy.name)
        self._unconfirmed.discard(copy.name)


async def _close(client: AgentClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await client.close()
