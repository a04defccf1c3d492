"""A volume's replication policy, and its form as ZFS user properties (pure).

The policy lives on the volume (docs/design.md: state lives in ZFS), so it
is read back after an agent restart and travels with the volume:

    zflock:replicate-to   target nodes, comma-separated: "node2,node3"
    zflock:every          interval of continuous replication: "30s", "1h30m";
                          absent = no schedule (one sync when asked)
    zflock:keep           keep rules on the primary (retention.py grammar)
    zflock:keep-replica   keep rules on the replicas

    zflock:policy-serial  the policy's serial: one up at every change (set, stop, a
                          move's or a failover's carried policy); kept when the
                          policy is removed, so "no policy" is ordered too
    zflock:policy-copy    on a replica only: the copy of its primary's policy the
                          primary sent with its last sync (or --stop), with that
                          serial, one property (one atomic `zfs set`). Never
                          acted upon: a failover adopts the newest copy
                          (schedule.policy_after_failover)

A volume with none of the first four has no policy. A volume with some but not all,
or with a value that does not parse, has a DAMAGED policy: that is an error
naming the property, never read as "no policy" (which would silently stop
keeping its replicas, or prune by rules nobody set).

Every value is plain ASCII from a small alphabet (node names, durations,
the keep grammar) and bounded in length, so it is a valid ZFS user-property
value (ZFS allows up to 8191 bytes) and reads back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from zflock.cluster.config import (
    DEFAULT_KEEP,
    AgentConfig,
    ConfigError,
    ReplicationConfig,
    validate_node_name,
)
from zflock.errors import UsageError, ZflockError
from zflock.replication.retention import KeepRules, parse_keep
from zflock.units import format_duration, parse_duration

PROP_REPLICATE_TO = "zflock:replicate-to"
PROP_EVERY = "zflock:every"
PROP_KEEP = "zflock:keep"
PROP_KEEP_REPLICA = "zflock:keep-replica"
POLICY_PROPERTIES = (PROP_REPLICATE_TO, PROP_EVERY, PROP_KEEP, PROP_KEEP_REPLICA)
PROP_POLICY_SERIAL = "zflock:policy-serial"
PROP_POLICY_COPY = "zflock:policy-copy"

# Below a second a schedule is a hot loop; beyond a week it is not
# "continuous" any more (and more likely a typo: 30d for 30s).
MIN_EVERY = 1
MAX_EVERY = 7 * 86400
MAX_TARGETS = 16


class DamagedPolicy(ZflockError):
    """The policy properties on a volume are present but unreadable."""


_BUILTIN_EVERY = parse_duration(ReplicationConfig.every)
_BUILTIN_KEEP = parse_keep(DEFAULT_KEEP)


@dataclass(frozen=True)
class PolicyDefaults:
    """The node's defaults (agent.toml `[replication]`), already validated."""

    every: int = _BUILTIN_EVERY
    keep: KeepRules = _BUILTIN_KEEP
    keep_replica: KeepRules = _BUILTIN_KEEP


@dataclass(frozen=True)
class ReplicationPolicy:
    """Where a volume is replicated, how often, and what each side keeps.

    `targets` keeps the operator's order (the scheduler's tie-break).
    `every` is seconds; None means no schedule: one sync when asked.
    """

    targets: tuple[str, ...]
    every: int | None
    keep: KeepRules
    keep_replica: KeepRules

    @property
    def continuous(self) -> bool:
        return self.every is not None


def defaults_from_config(config: AgentConfig) -> PolicyDefaults:
    """Parse agent.toml's `[replication]`; errors name the file and the key."""
    raw: ReplicationConfig = config.replication

    def fail(key: str, exc: UsageError) -> ConfigError:
        return ConfigError(f"{config.source or 'agent config'}: replication.{key}: {exc}")

    try:
        every = parse_every(raw.every)
    except UsageError as exc:
        raise fail("every", exc) from None
    rules = {}
    for key, text in (("keep", raw.keep), ("keep_replica", raw.keep_replica)):
        try:
            rules[key] = parse_keep(text)
        except UsageError as exc:
            raise fail(key, exc) from None
    return PolicyDefaults(every, rules["keep"], rules["keep_replica"])


def parse_targets(text: str) -> tuple[str, ...]:
    """'node2,node3' -> ('node2', 'node3'); empty entries and duplicates refused."""
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise UsageError(f"invalid --to {text!r}: give node names separated by commas")
    for name in names:
        validate_node_name(name)
    return tuple(names)


def parse_every(text: str) -> int:
    return check_every(parse_duration(text, "interval"))


def check_every(seconds: int) -> int:
    if not MIN_EVERY <= seconds <= MAX_EVERY:
        raise UsageError(
            f"invalid interval {format_duration(seconds) if seconds > 0 else seconds}: "
            f"must be between {format_duration(MIN_EVERY)} and {format_duration(MAX_EVERY)}"
        )
    return seconds


def validate_policy(policy: ReplicationPolicy, primary: str) -> ReplicationPolicy:
    """Refuse a policy no agent could follow; returns it unchanged when sound."""
    if not policy.targets:
        raise UsageError("a replication policy needs at least one target node")
    if len(policy.targets) > MAX_TARGETS:
        raise UsageError(f"at most {MAX_TARGETS} target nodes, got {len(policy.targets)}")
    seen: set[str] = set()
    for name in policy.targets:
        validate_node_name(name)
        if name in seen:
            raise UsageError(f"target node {name!r} given twice")
        seen.add(name)
    if primary in seen:
        raise UsageError(f"{primary!r} holds the primary: it cannot be its own replica target")
    if policy.every is not None:
        check_every(policy.every)
    return policy


def policy_from_input(
    to: str,
    every: str | None,
    keep: str | None,
    keep_replica: str | None,
    primary: str,
    defaults: PolicyDefaults,
) -> ReplicationPolicy:
    """The policy an operator asked for on the command line, validated.

    `every` is None for one sync (no schedule) and "" for the node's default
    interval (`--every` given without a value).
    """
    seconds: int | None = None
    if every is not None:
        seconds = defaults.every if every == "" else parse_every(every)
    policy = ReplicationPolicy(
        targets=parse_targets(to),
        every=seconds,
        keep=defaults.keep if keep is None else parse_keep(keep),
        keep_replica=defaults.keep_replica if keep_replica is None else parse_keep(keep_replica),
    )
    return validate_policy(policy, primary)


def merge(
    existing: ReplicationPolicy | None, asked: ReplicationPolicy, primary: str
) -> ReplicationPolicy:
    """Add the asked targets to a stored policy; the asked interval and rules win.

    One volume has one interval and one set of keep rules; targets
    accumulate, so `--to node3` next to an existing node2 keeps both, and
    `--stop --to node2` removes one.
    """
    if existing is None:
        return validate_policy(asked, primary)
    targets = existing.targets + tuple(t for t in asked.targets if t not in existing.targets)
    return validate_policy(replace(asked, targets=targets), primary)


def stop(policy: ReplicationPolicy, targets: Iterable[str] = ()) -> ReplicationPolicy | None:
    """The policy without `targets` (all of them when none given); None when none remain."""
    dropped = tuple(targets)
    if not dropped:
        return None
    for name in dropped:
        if name not in policy.targets:
            have = ", ".join(policy.targets)
            raise UsageError(f"{name!r} is not a replication target (targets: {have})")
    remaining = tuple(t for t in policy.targets if t not in dropped)
    return replace(policy, targets=remaining) if remaining else None


# -- ZFS user properties ----------------------------------------------------------


def policy_properties(policy: ReplicationPolicy) -> dict[str, str | None]:
    """The properties that store `policy`; None means "inherit" (remove it)."""
    return {
        PROP_REPLICATE_TO: ",".join(policy.targets),
        PROP_EVERY: None if policy.every is None else format_duration(policy.every),
        PROP_KEEP: policy.keep.text(),
        PROP_KEEP_REPLICA: policy.keep_replica.text(),
    }


def cleared_properties() -> dict[str, str | None]:
    """The properties that remove a policy (every one inherited = absent)."""
    return dict.fromkeys(POLICY_PROPERTIES)


def policy_from_properties(props: Mapping[str, str | None]) -> ReplicationPolicy | None:
    """Read a volume's policy: None when it has none, DamagedPolicy when unreadable.

    `props` maps a property to its value, None when unset (as `zfs/` reports).
    """
    present = {p: props.get(p) for p in POLICY_PROPERTIES if props.get(p) is not None}
    if not present:
        return None
    for required in (PROP_REPLICATE_TO, PROP_KEEP, PROP_KEEP_REPLICA):
        if required not in present:
            raise DamagedPolicy(f"damaged replication policy: {required} is missing")
    try:
        targets = parse_targets(present[PROP_REPLICATE_TO] or "")
    except UsageError as exc:
        raise DamagedPolicy(f"damaged replication policy: {PROP_REPLICATE_TO}: {exc}") from None
    every: int | None = None
    raw_every = present.get(PROP_EVERY)
    if raw_every is not None:
        try:
            every = parse_every(raw_every)
        except UsageError as exc:
            raise DamagedPolicy(f"damaged replication policy: {PROP_EVERY}: {exc}") from None
    rules = {}
    for prop in (PROP_KEEP, PROP_KEEP_REPLICA):
        try:
            rules[prop] = parse_keep(present[prop] or "")
        except UsageError as exc:
            raise DamagedPolicy(f"damaged replication policy: {prop}: {exc}") from None
    policy = ReplicationPolicy(targets, every, rules[PROP_KEEP], rules[PROP_KEEP_REPLICA])
    if len(set(targets)) != len(targets) or len(targets) > MAX_TARGETS:
        raise DamagedPolicy(f"damaged replication policy: {PROP_REPLICATE_TO}: bad target list")
    return policy


# -- the serial, and a replica's copy of its primary's policy ------------------------


def policy_serial(value: str | None) -> int:
    """A stored serial; absent (a policy set before serials existed) or unreadable: 0,
    the lowest, so any serialed copy is taken for newer."""
    try:
        serial = int(value or "0")
    except ValueError:
        return 0
    return max(serial, 0)


@dataclass(frozen=True)
class PolicyCopy:
    """A replica's copy of its primary's policy (`zflock:policy-copy`).

    `properties` are the policy's properties as the primary stores them, without
    None ({} = the primary had no policy); `sender` the primary that sent it and
    `sent_at` when (its unix clock).
    """

    serial: int
    sender: str
    sent_at: float
    properties: Mapping[str, str] = field(default_factory=dict)


def copy_value(copy: PolicyCopy) -> str:
    """The property value storing `copy`: compact JSON, a few hundred bytes at most."""
    policy = {k: v for k, v in sorted(copy.properties.items()) if k in POLICY_PROPERTIES}
    body = {"serial": copy.serial, "from": copy.sender, "at": round(copy.sent_at, 3),
            "policy": policy}  # fmt: skip
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


# A stored copy is rewritten when anything but its time changed, or once it is this old.
# Failover warns about a copy older than 3 intervals + 60 s (agent/failover.py), so one
# refreshed once a minute never trips that, and most scheduled runs set no property.
COPY_REFRESH_SECONDS = 60.0


def copy_needs_storing(stored: str | None, new: PolicyCopy) -> bool:
    """Whether `new` must be written over `stored` (the property's value, or None)."""
    if stored is None:
        return True
    try:
        old = copy_from_value(stored)
    except DamagedPolicy:
        return True
    if copy_value(replace(old, sent_at=new.sent_at)) != copy_value(new):
        return True
    return not 0 <= new.sent_at - old.sent_at < COPY_REFRESH_SECONDS


def copy_from_value(text: str) -> PolicyCopy:
    """Read a stored copy back; DamagedPolicy when it is not one this code wrote."""
    try:
        body = json.loads(text)
        serial, sender, at, policy = body["serial"], body["from"], body["at"], body["policy"]
    except (ValueError, TypeError, KeyError):
        raise DamagedPolicy(f"damaged policy copy {PROP_POLICY_COPY}={text[:60]!r}") from None
    ok = (
        isinstance(serial, int) and serial >= 0 and isinstance(sender, str)
        and isinstance(at, int | float) and isinstance(policy, dict)
        and all(k in POLICY_PROPERTIES and isinstance(v, str) for k, v in policy.items())
    )  # fmt: skip
    if not ok:
        raise DamagedPolicy(f"damaged policy copy {PROP_POLICY_COPY}={text[:60]!r}")
    return PolicyCopy(serial, sender, float(at), dict(policy))
