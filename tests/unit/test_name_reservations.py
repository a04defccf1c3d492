"""The name reservation table, and the create protocol over it, as pure code.

The protocol (zflock/agent/names.py) is modelled with the real `NameTable`
of every node and one clock: creators reserve on every node in any order,
at any pace, may die at any step, and create only if the real table lets
them pin. Whatever the schedule, at most one creator of a name succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from zflock.agent.reservations import (
    PIN_WITHIN,
    RESERVATION_TTL,
    NameTable,
    Refusal,
)


def test_one_live_reservation_per_name() -> None:
    table = NameTable()
    assert table.reserve("web", "a", "node1", 10, now=0) is None
    refused = table.reserve("web", "b", "node2", 10, now=5)
    assert refused is not None and refused.why is Refusal.TAKEN
    assert refused.holder is not None and refused.holder.creator == "node1"
    assert table.reserve("db", "b", "node2", 10, now=5) is None  # other names are free
    assert table.reserve("web", "a", "node1", 10, now=6) is None  # its own: granted again
    assert table.get("web", 9.9) is not None  # ... without being extended
    assert table.reserve("web", "b", "node2", 10, now=10) is None  # expired: b's now
    table.release("web", "a")  # not a's any more: nothing happens
    assert table.get("web", 11) is not None and table.get("web", 11).token == "b"  # type: ignore[union-attr]
    table.release("web", "b")
    assert table.get("web", 11) is None


def test_a_pinned_reservation_outlives_its_deadline_until_released() -> None:
    table = NameTable()
    assert table.reserve("web", "a", "node1", 10, now=0) is None
    assert table.pin("web", "a", started=0, now=1)
    refused = table.reserve("web", "b", "node2", 10, now=1000)
    assert refused is not None and refused.why is Refusal.TAKEN
    table.release("web", "a")
    assert table.reserve("web", "b", "node2", 10, now=1000) is None


def test_no_pin_when_expired_taken_or_late() -> None:
    table = NameTable()
    assert table.reserve("web", "a", "node1", RESERVATION_TTL, now=0) is None
    assert not table.pin("web", "a", started=0, now=PIN_WITHIN)  # too late: grants may be gone
    assert not table.pin("web", "b", started=0, now=1)  # not b's
    assert not table.pin("web", "a", started=0, now=RESERVATION_TTL)  # expired
    assert table.pin("web", "a", started=0, now=PIN_WITHIN - 0.001)


def test_the_table_is_bounded_and_expired_entries_make_room() -> None:
    table = NameTable(limit=100)
    for i in range(100):
        assert table.reserve(f"v{i}", "t", "node1", 10, now=0) is None
    refused = table.reserve("one-more", "t", "node1", 10, now=5)
    assert refused is not None and refused.why is Refusal.FULL
    assert len(table) == 100
    assert table.reserve("one-more", "t", "node1", 10, now=10) is None  # the rest expired
    assert len(table) == 1


# -- the protocol, modelled over the real tables ----------------------------------------

NODES = ("node1", "node2", "node3")


@dataclass
class Creator:
    token: str
    target: str
    order: list[str]  # the nodes it reserves on, one step each
    dies_after: int  # steps it takes before it dies (never releasing anything)
    started: float | None = None
    granted: list[str] = field(default_factory=list)
    step: int = 0
    done: bool = False
    created: bool = False


@dataclass
class Cluster:
    tables: dict[str, NameTable] = field(default_factory=lambda: {n: NameTable() for n in NODES})
    datasets: set[str] = field(default_factory=set)  # nodes holding a copy of the name

    def reserve(self, node: str, c: Creator, now: float) -> bool:
        if self.tables[node].reserve("web", c.token, c.target, RESERVATION_TTL, now) is not None:
            return False
        if node in self.datasets:  # the node's `zfs get` finds a copy
            self.tables[node].release("web", c.token)
            return False
        return True

    def advance(self, c: Creator, now: float) -> None:
        """One step of creator `c` (names.py's order: reserve everywhere, pin, create)."""
        if c.done:
            return
        if c.step >= c.dies_after:
            c.done = True  # died: its reservations expire
            return
        if c.started is None:
            c.started = now
        if c.step < len(c.order):
            node = c.order[c.step]
            c.step += 1
            if self.reserve(node, c, now):
                c.granted.append(node)
                return
            self.finish(c)  # refused: release what it holds, fail
            return
        if self.tables[c.target].pin("web", c.token, c.started, now):
            self.datasets.add(c.target)
            c.created = True
        self.finish(c)

    def finish(self, c: Creator) -> None:
        for node in c.granted:
            self.tables[node].release("web", c.token)
        c.done = True


@st.composite
def creators(draw: st.DrawFn) -> list[Creator]:
    count = draw(st.integers(2, 3))
    made = []
    for i in range(count):
        target = draw(st.sampled_from(NODES))
        order = draw(st.permutations(NODES))
        dies_after = draw(st.integers(1, len(NODES) + 2))  # +1: pins, +2: lives
        made.append(Creator(f"t{i}", target, list(order), dies_after))
    return made


@settings(max_examples=1000, deadline=None)
@given(
    creators(),
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.0, 1.0, 29.0, 31.0, 61.0])),
        max_size=40,
    ),
)
def test_two_creators_of_one_name_never_both_succeed(
    people: list[Creator], schedule: list[tuple[int, float]]
) -> None:
    cluster = Cluster()
    now = 0.0
    for who, pause in schedule:
        now += pause
        cluster.advance(people[who % len(people)], now)
    for c in people:  # the rest run to their end without pauses
        while not c.done:
            cluster.advance(c, now)
    assert sum(c.created for c in people) <= 1
    assert len(cluster.datasets) <= 1


def test_a_creator_too_slow_to_pin_fails() -> None:
    """A's grant on node2 expires while A dawdles; B takes node2, creates there and releases
    node1; A then gets node1 and would create a second `web` if it could still pin."""
    cluster = Cluster()
    a = Creator("a", "node1", ["node2", "node1", "node3"], dies_after=99)
    b = Creator("b", "node2", ["node1", "node3", "node2"], dies_after=99)
    cluster.advance(a, 0.0)  # node2 granted to a until 60
    for _ in range(4):
        cluster.advance(b, 61.0)  # node1, node3, node2 (a's expired), pin: created on node2
    assert b.created
    while not a.done:
        cluster.advance(a, 62.0)  # node1 (b released it), node3, pin: refused, 62 s after start
    assert not a.created


def test_a_lone_creator_succeeds_and_a_later_one_is_refused() -> None:
    cluster = Cluster()
    first = Creator("a", "node1", list(NODES), dies_after=99)
    while not first.done:
        cluster.advance(first, 0.0)
    assert first.created
    second = Creator("b", "node2", list(NODES), dies_after=99)
    while not second.done:
        cluster.advance(second, 1000.0)
    assert not second.created
    assert all(len(t) == 0 for t in cluster.tables.values())  # everything released
