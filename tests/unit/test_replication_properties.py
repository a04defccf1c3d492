"""Property tests: the planner over generated histories, checked by simulation.

A scenario is a source history plus a destination derived from it: a
subsequence of a prefix of the source (the snapshots it received), maybe
destination-only snapshots before and after the newest shared one (some
reusing source names with new GUIDs), maybe written to, maybe holding a
resume token, with some ownership, role and epoch. A small simulator applies
plans the way ZFS would (refusing what ZFS refuses), and the test re-plans
until done, as the executor does. Properties:

1. every incremental's base is the destination's newest snapshot and on the source (GUID);
2. when no conflict is raised, the destination ends at the source's newest GUID;
3. without --force-rollback no destination snapshot is ever destroyed;
4. conflicts are raised exactly when the scenario's construction says;
5. an up-to-date destination yields no steps, and re-planning after success is a no-op;
6. the receiver admits every cleanup and every `receive -F` the planner asks for
   (admit.py), so its own checks never refuse a replication the rules allow;
7. whatever cleanup a peer asks for, what the receiver admits never destroys a snapshot
   the source has, never one of the replica's own without --force-rollback, and never
   rolls back past a snapshot it keeps (tests of admit.py over generated requests);
8. an unstamped dataset is adopted (stamped) only when every snapshot it has is the
   source's: never one with a snapshot of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import event, given, settings
from hypothesis import strategies as st

from zflock.replication.admit import NotAdmitted, admit_cleanup, admit_receive
from zflock.replication.endpoint import Cleanup, StepHeader
from zflock.replication.plan import (
    ROLE_PRIMARY,
    DestinationIsPrimary,
    DestinationNotOurs,
    Diverged,
    EpochNewerOnDestination,
    Full,
    Incremental,
    NoCommonSnapshot,
    Plan,
    PlanOptions,
    ReplicaInfo,
    ReplicationConflict,
    Resume,
    SnapRef,
    SnapshotNameTaken,
    Source,
    SourceHasNoSnapshots,
    plan_replication,
)

VOL = "vol"
SRC_EPOCH = 5


@dataclass
class Scenario:
    source: list[SnapRef]
    exists: bool
    managed: str | None
    role: str | None
    epoch: int | None
    modified: bool
    # Destination snapshots, oldest first, and what the construction knows:
    dest: list[SnapRef]
    common: list[SnapRef]  # source snapshots the destination has
    late_extras: list[SnapRef]  # destination-only, after the newest common one
    early_extras: list[SnapRef]  # destination-only, before it
    token: str | None
    token_target: int | None  # GUID the interrupted stream was bringing
    token_known: bool  # whether the executor could decode that GUID from the token
    token_base: int | None  # GUID the interrupted stream started from (None: full)
    options: PlanOptions


def _orders(draw: st.DrawFn, n: int) -> list[int]:
    steps = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    out, acc = [], draw(st.integers(0, 100))
    for step in steps:
        acc += step
        out.append(acc)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(0, 7))
    guids = draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n, unique=True))
    source = [
        SnapRef(f"s{i}", g, o) for i, (g, o) in enumerate(zip(guids, _orders(draw, n), strict=True))
    ]
    minted = iter(range(2 * 10**9, 3 * 10**9))  # never collides with the source's

    def fresh_guid() -> int:
        return next(minted)

    options = PlanOptions(
        force_rollback=draw(st.booleans()),
        resume_supported=draw(st.booleans()),
        intermediates=draw(st.booleans()),
    )
    # Weighted so most cases reach the interesting part: an existing replica.
    exists = draw(st.sampled_from([True, True, True, True, True, False]))
    empty = Scenario(
        source, False, None, None, None, False, [], [], [], [], None, None, False, None, options
    )
    if not exists:
        return empty

    managed = draw(st.sampled_from([VOL] * 8 + [None, "other"]))
    role = draw(st.sampled_from([None] + ["replica"] * 8 + [ROLE_PRIMARY]))
    epoch = draw(st.sampled_from([None, SRC_EPOCH - 1] + [SRC_EPOCH] * 6 + [SRC_EPOCH + 1]))
    modified = draw(st.sampled_from([False, False, False, True]))

    # What it received: a subsequence of a prefix of the source.
    prefix = draw(st.integers(0, n) | st.just(n))
    common = [s for s in source[:prefix] if draw(st.sampled_from([True, True, True, False]))]
    names_taken: set[str] = {s.name for s in common}

    def extra() -> SnapRef:
        # Either a fresh name or a source name reused for different content.
        free = [s.name for s in source if s.name not in names_taken]
        name = draw(st.sampled_from([*free, "local"]))
        if name in names_taken:  # "local" already used
            name = f"local{len(names_taken)}"
        names_taken.add(name)
        return SnapRef(name, fresh_guid(), 0)

    early_extras: list[tuple[int, SnapRef]] = []
    if common:
        for _ in range(draw(st.integers(0, 2))):
            early_extras.append((draw(st.integers(0, len(common) - 1)), extra()))
    late_extras = [extra() for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])))]

    body: list[SnapRef] = []
    for i, snap in enumerate(common):
        body.extend(e for pos, e in early_extras if pos == i)
        body.append(snap)
    body.extend(late_extras)
    dest = [SnapRef(s.name, s.guid, o) for s, o in zip(body, _orders(draw, len(body)), strict=True)]

    # A resume token, shaped like the ones ZFS leaves behind.
    # Its target may have been pruned from the source since (a fresh GUID).
    token = token_target = token_base = None
    token_known = draw(st.booleans())
    if draw(st.booleans()):
        after = source[source.index(common[-1]) + 1 :] if common else source
        if managed is None and not dest and source:
            token_target = draw(st.sampled_from([source[0].guid, fresh_guid()]))
        elif common and after:
            target = after[0] if options.intermediates else after[-1]
            token_target = draw(st.sampled_from([target.guid, fresh_guid()]))
            token_base = common[-1].guid
        if token_target is not None:
            token = "1-token"

    return Scenario(
        source,
        True,
        managed,
        role,
        epoch,
        modified,
        dest,
        common,
        late_extras,
        [e for _, e in early_extras],
        token,
        token_target,
        token_known,
        token_base,
        options,
    )


def expected_conflict(sc: Scenario) -> type[ReplicationConflict] | None:
    """What the construction says, without looking at how the planner decides."""
    if not sc.source:
        return SourceHasNoSnapshots
    if not sc.exists:
        return None
    source_guids = {s.guid for s in sc.source}
    our_partial_initial = (
        sc.managed is None
        and not sc.dest
        and sc.token is not None
        and sc.token_known
        and sc.token_target in source_guids
    )
    stamped = sc.managed is not None and sc.role is not None and sc.epoch is not None
    our_unstamped_complete = (  # rule 3: adopted, then an incremental like any replica
        not stamped
        and sc.token is None
        and bool(sc.dest)
        and not sc.late_extras
        and not sc.early_extras
        and sc.managed in (None, VOL)
        and sc.role in (None, "replica")
        and (sc.epoch is None or sc.epoch <= SRC_EPOCH)
    )
    if our_unstamped_complete:
        return None
    if not our_partial_initial:
        if sc.managed != VOL:
            return DestinationNotOurs
        if sc.role == ROLE_PRIMARY:
            return DestinationIsPrimary
        if sc.epoch is not None and sc.epoch > SRC_EPOCH:
            return EpochNewerOnDestination
    if not sc.dest:
        return None  # sent in full
    if not sc.common:
        return NoCommonSnapshot
    if sc.late_extras and not sc.options.force_rollback:
        return Diverged
    after = sc.source[sc.source.index(sc.common[-1]) + 1 :]
    incoming = {s.name for s in (after if sc.options.intermediates else after[-1:])}
    if any(e.name in incoming for e in sc.early_extras) and not sc.options.force_rollback:
        return SnapshotNameTaken
    return None


@dataclass
class Dest:
    """The destination as ZFS would hold it while plans are applied."""

    exists: bool
    managed: str | None
    role: str | None
    epoch: int | None
    modified: bool
    snaps: list[SnapRef]
    token: str | None
    token_target: int | None
    token_known: bool
    token_base: int | None
    destroyed: list[SnapRef] = field(default_factory=list)

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            exists=self.exists,
            managed_volume=self.managed,
            role=self.role,
            epoch=self.epoch,
            modified_since_last_snapshot=self.modified,
            resume_token=self.token,
            resume_to_guid=self.token_target if self.token_known else None,
            snapshots=self.snaps,
        )

    def add(self, snap: SnapRef) -> None:
        # ZFS refuses a snapshot name that exists already.
        assert snap.name not in {s.name for s in self.snaps}, f"name {snap.name} taken"
        order = self.snaps[-1].order + 1 if self.snaps else 1
        self.snaps.append(SnapRef(snap.name, snap.guid, order))

    def drop_token(self) -> None:
        self.token = self.token_target = self.token_base = None

    def stamp(self) -> None:
        self.managed, self.role, self.epoch = VOL, "replica", SRC_EPOCH


def check_may_overwrite(dest: Dest) -> None:
    """The safety rule for anything that discards destination state."""
    assert dest.managed == VOL, "touched a dataset that is not our replica"
    assert dest.role != ROLE_PRIMARY, "touched a primary"
    assert dest.epoch is None or dest.epoch <= SRC_EPOCH, "touched a newer epoch"


def apply(plan: Plan, dest: Dest, source: list[SnapRef], options: PlanOptions) -> None:
    source_guids = {s.guid for s in source}
    # Property 6: the receiver, checking against its own state, admits the plan.
    admit_cleanup(Source(VOL, SRC_EPOCH, source), dest.info(), Cleanup.from_plan(
        plan, Source(VOL, SRC_EPOCH, source), options))  # fmt: skip
    if plan.adopt_existing:
        # Property 8: only a dataset holding nothing but the source's snapshots.
        assert dest.managed is None or dest.role is None or dest.epoch is None
        assert dest.snaps and all(s.guid in source_guids for s in dest.snaps)
        assert dest.token is None
        dest.stamp()
    if plan.abort_partial_receive:
        assert dest.token is not None
        if dest.managed is None and not dest.snaps:
            dest.exists = False  # receive -A of a new dataset removes it
        dest.drop_token()
    if plan.recreate_destination:
        assert dest.exists and not dest.snaps, "recreate only an empty dataset"
        check_may_overwrite(dest)
        dest.exists, dest.modified = False, False
    for snap in plan.destroy_on_destination:
        check_may_overwrite(dest)
        assert snap in dest.snaps
        dest.snaps.remove(snap)
        dest.destroyed.append(snap)
    if plan.rollback_to is not None:
        check_may_overwrite(dest)
        # `zfs rollback` without -r: the base must be the newest by now.
        assert dest.snaps and dest.snaps[-1] == plan.rollback_to
        dest.modified = False
    for i, step in enumerate(plan.steps):
        force = plan.receive_force and i == 0
        header = StepHeader.from_step(step, force=force, resumable=options.resume_supported)
        admit_receive(dest.info(), header)  # property 6, for -F
        if isinstance(step, Full):
            assert not dest.exists, "full receive into an existing dataset"
            dest.exists, dest.snaps, dest.modified = True, [], False
            dest.add(step.to)
        elif isinstance(step, Incremental):
            assert dest.exists and dest.snaps
            check_may_overwrite(dest) if force else None
            # Property 1: the base is the newest snapshot there, and on the source.
            assert dest.snaps[-1].guid == step.base.guid
            assert step.base.guid in source_guids
            assert not dest.modified or force, "receive into a modified dataset without -F"
            dest.modified = False
            lo, hi = source.index(step.base), source.index(step.to)
            for snap in source[lo + 1 : hi + 1] if step.intermediates else [step.to]:
                dest.add(snap)
        else:
            assert isinstance(step, Resume) and dest.token == step.token
            assert options.resume_supported, "resume planned where a side cannot resume"
            # `send -t` fails if the target left the source; the receive fails if
            # the destination moved on, was written, or holds the name.
            target = next((s for s in source if s.guid == dest.token_target), None)
            names = {s.name for s in dest.snaps}
            base_ok = (dest.snaps[-1].guid if dest.snaps else None) == dest.token_base
            if target is not None and base_ok and not dest.modified and target.name not in names:
                dest.add(target)
                dest.drop_token()
            else:
                # ZFS refuses the resume; the executor then aborts it (receive -A).
                if dest.managed is None and not dest.snaps:
                    dest.exists = False
                dest.drop_token()
                return
        dest.stamp()  # the receiver stamps its dataset after every receive


def run(sc: Scenario) -> tuple[Dest, list[Plan]]:
    """Plan and apply until done, as the executor loops; conflicts propagate."""
    dest = Dest(
        sc.exists,
        sc.managed,
        sc.role,
        sc.epoch,
        sc.modified,
        list(sc.dest),
        sc.token,
        sc.token_target,
        sc.token_known,
        sc.token_base,
    )
    source = Source(VOL, SRC_EPOCH, sc.source)
    plans: list[Plan] = []
    for _ in range(5):
        plan = plan_replication(source, dest.info(), sc.options)
        plans.append(plan)
        apply(plan, dest, sc.source, sc.options)
        if not plan.replan_after:
            return dest, plans
    raise AssertionError(f"no end after {len(plans)} plans: {plans}")


def _shape(plan: Plan) -> str:
    parts = [type(s).__name__ for s in plan.steps]
    for flag in ("abort_partial_receive", "recreate_destination", "receive_force"):
        if getattr(plan, flag):
            parts.append(flag)
    if plan.destroy_on_destination:
        parts.append("destroy")
    if plan.rollback_to is not None:
        parts.append("rollback")
    return "+".join(parts) or "nothing"


@settings(max_examples=1500, deadline=None)
@given(scenarios())
def test_planner_over_generated_histories(sc: Scenario) -> None:
    expected = expected_conflict(sc)
    initial_guids = {s.guid for s in sc.dest}
    try:
        dest, plans = run(sc)
    except ReplicationConflict as conflict:
        event(f"conflict {type(conflict).__name__}")
        # Property 4 (raised when expected, and the right one).
        assert expected is not None, f"unexpected {conflict!r}"
        assert type(conflict) is expected, f"{conflict!r}, expected {expected.__name__}"
        return
    assert expected is None, f"expected {expected.__name__}, got {plans}"
    event(f"plans {len(plans)}; " + " ".join(_shape(p) for p in plans))
    # Property 2: the destination ends at the source's newest snapshot.
    assert dest.exists and dest.snaps[-1].guid == sc.source[-1].guid
    assert not dest.modified
    # Property 3: nothing destroyed without --force-rollback; with it, only
    # snapshots the source lacks, or whose names the source needed.
    if not sc.options.force_rollback:
        assert dest.destroyed == []
        assert initial_guids <= {s.guid for s in dest.snaps}
        assert not any(p.destroy_on_destination for p in plans)
    source_guids = {s.guid for s in sc.source}
    incoming_names = {s.name for s in sc.source}
    for snap in dest.destroyed:
        assert snap.guid not in source_guids or snap.name in incoming_names
    # Property 5: once done, planning again changes nothing -- except that a half-stamped
    # replica which only needed a cleanup (no receive stamps it) is adopted next time.
    again = plan_replication(Source(VOL, SRC_EPOCH, sc.source), dest.info(), sc.options)
    if again.adopt_existing:
        assert not any(p.steps for p in plans) and None in (sc.managed, sc.role, sc.epoch)
        dest.stamp()
        again = plan_replication(Source(VOL, SRC_EPOCH, sc.source), dest.info(), sc.options)
    assert again.up_to_date and again.steps == ()


@st.composite
def up_to_date_scenarios(draw: st.DrawFn) -> tuple[list[SnapRef], list[SnapRef], PlanOptions]:
    n = draw(st.integers(1, 8))
    guids = draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n, unique=True))
    source = [
        SnapRef(f"s{i}", g, o) for i, (g, o) in enumerate(zip(guids, _orders(draw, n), strict=True))
    ]
    kept = [s for s in source[:-1] if draw(st.booleans())] + [source[-1]]
    dest = [SnapRef(s.name, s.guid, o) for s, o in zip(kept, _orders(draw, len(kept)), strict=True)]
    options = PlanOptions(
        force_rollback=draw(st.booleans()),
        resume_supported=draw(st.booleans()),
        intermediates=draw(st.booleans()),
    )
    return source, dest, options


@given(up_to_date_scenarios())
def test_up_to_date_destination_yields_no_steps(
    case: tuple[list[SnapRef], list[SnapRef], PlanOptions],
) -> None:
    source, dest, options = case
    info = ReplicaInfo(True, managed_volume=VOL, role="replica", epoch=SRC_EPOCH, snapshots=dest)
    plan = plan_replication(Source(VOL, SRC_EPOCH, source), info, options)
    assert plan.up_to_date and plan.steps == ()
    assert plan.common_base == source[-1]


@given(scenarios())
def test_planning_is_deterministic_and_order_insensitive(sc: Scenario) -> None:
    source = Source(VOL, SRC_EPOCH, sc.source)
    shuffled = Source(VOL, SRC_EPOCH, list(reversed(sc.source)))
    info = Dest(
        sc.exists,
        sc.managed,
        sc.role,
        sc.epoch,
        sc.modified,
        list(sc.dest),
        sc.token,
        sc.token_target,
        sc.token_known,
        sc.token_base,
    ).info()
    outcomes = []
    for src in (source, shuffled):
        try:
            outcomes.append(plan_replication(src, info, sc.options))
        except ReplicationConflict as conflict:
            outcomes.append(type(conflict))  # type: ignore[arg-type]
    assert outcomes[0] == outcomes[1]


# -- property 7: what a receiver admits, whatever a peer asks -----------------------------


@st.composite
def requests(draw: st.DrawFn) -> tuple[Scenario, Cleanup]:
    """A generated destination and an arbitrary cleanup a (buggy or stale) peer might send:
    snapshots to destroy and a rollback target drawn from the destination's own."""
    sc = draw(scenarios())
    pick = st.sampled_from(sc.dest) if sc.dest else st.nothing()
    destroy = draw(st.lists(pick, max_size=3, unique=True)) if sc.dest else []
    rollback = draw(st.none() | pick) if sc.dest else None
    cleanup = Cleanup(
        destroy_snapshots=destroy,
        rollback_to=rollback,
        force_rollback=draw(st.booleans()),
        source_snapshots=list(sc.source),
    )
    return sc, cleanup


@settings(max_examples=1000, deadline=None)
@given(requests())
def test_receiver_admits_only_what_discards_nothing_it_must_keep(
    case: tuple[Scenario, Cleanup],
) -> None:
    sc, cleanup = case
    info = ReplicaInfo(True, managed_volume=VOL, role="replica", epoch=SRC_EPOCH,
                       snapshots=sc.dest)  # fmt: skip
    try:
        admit_cleanup(Source(VOL, SRC_EPOCH, sc.source), info, cleanup)
    except NotAdmitted:
        event("refused")
        return
    event("admitted")
    source_guids = {s.guid for s in sc.source}
    destroyed = {s.guid for s in cleanup.destroy_snapshots}
    # Never common history; never the replica's own without the operator's consent.
    assert not destroyed & source_guids
    assert cleanup.force_rollback or not destroyed
    if cleanup.rollback_to is not None:
        # Only to a snapshot the source has, and never past one that is kept.
        assert cleanup.rollback_to.guid in source_guids
        kept = [s for s in sc.dest if s.guid not in destroyed]
        assert max(kept, key=lambda s: s.order).guid == cleanup.rollback_to.guid


@given(scenarios(), st.data())
def test_receive_force_admitted_only_on_the_newest_snapshot(
    sc: Scenario, data: st.DataObject
) -> None:
    if not sc.dest:
        return
    base = data.draw(st.sampled_from(sc.dest))
    header = StepHeader(kind="incremental", to=base, base=base, force=True)
    info = ReplicaInfo(True, managed_volume=VOL, snapshots=sc.dest)
    newest = max(sc.dest, key=lambda s: s.order)
    try:
        admit_receive(info, header)
    except NotAdmitted:
        assert base != newest
    else:
        assert base == newest
