"""Name reservations: the in-memory table behind cluster-wide unique names.

A create asks every node of the inventory to reserve the name for it
(docs/design.md, "Unique names"). Each node keeps, per name, at most one
reservation: a creator's random token with a deadline. A node grants a
reservation only when it holds no live reservation of that name for another
token; the creating node *pins* its own reservation just before it creates,
so it cannot expire while the dataset is being made, and releases it once
the dataset exists (then the dataset itself refuses every later reservation).

Everything here is pure: the clock is an argument. The table is bounded:
reservations expire, and a node refuses new ones when too many are live.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# How long a reservation lives unless released or pinned. A creator that dies
# holds the name that long at most; a live creator must pin within half of
# it (PIN_WITHIN), which leaves the other half as a margin for clocks that
# run at slightly different rates and for answers still in flight.
RESERVATION_TTL = 60.0
PIN_WITHIN = RESERVATION_TTL / 2
MAX_TTL = 600.0  # what a node accepts from a request
MAX_RESERVATIONS = 4096  # live reservations per node; more is a client gone wrong
MAX_TOKEN = 64


@dataclass(frozen=True)
class Reservation:
    token: str
    creator: str  # the node that will create the volume (for messages)
    expires: float  # on the reserving node's monotonic clock
    pinned: bool = False  # the creator is creating: no expiry until released

    def live(self, now: float) -> bool:
        return self.pinned or now < self.expires


class Refusal(Enum):
    """Why a node refuses a reservation."""

    TAKEN = "taken"  # another creator holds a live reservation of the name
    FULL = "full"  # too many live reservations on this node


@dataclass(frozen=True)
class Refused:
    why: Refusal
    holder: Reservation | None = None


def decide(
    current: Reservation | None, token: str, live_count: int, limit: int, now: float
) -> Refused | None:
    """Whether a reservation of a name for `token` may be granted (None: grant)."""
    if current is not None and current.live(now):
        return None if current.token == token else Refused(Refusal.TAKEN, current)
    if live_count >= limit:
        return Refused(Refusal.FULL)
    return None


class NameTable:
    """The live reservations of one node, by volume name."""

    def __init__(self, limit: int = MAX_RESERVATIONS) -> None:
        self._table: dict[str, Reservation] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self._table)

    def get(self, name: str, now: float) -> Reservation | None:
        current = self._table.get(name)
        return current if current is not None and current.live(now) else None

    def reserve(
        self, name: str, token: str, creator: str, ttl: float, now: float
    ) -> Refused | None:
        """Grant (None) or refuse. A repeated grant for the same token keeps its deadline:
        a reservation is never extended, so its holder's deadline stays what it computed."""
        current = self._table.get(name)
        if current is not None and not current.live(now):
            del self._table[name]
            current = None
        if current is None and len(self._table) >= self.limit:
            self.purge(now)
        refused = decide(current, token, len(self._table), self.limit, now)
        if refused is None and current is None:
            self._table[name] = Reservation(token=token, creator=creator, expires=now + ttl)
        return refused

    def pin(self, name: str, token: str, started: float, now: float) -> bool:
        """Keep `token`'s reservation until released, if the creator may still create.

        False when it is no longer live, or when the creator began asking for
        grants (`started`) PIN_WITHIN seconds ago or more: a grant it got from
        another node may then have expired there and gone to someone else.
        """
        current = self._table.get(name)
        if current is None or current.token != token or not current.live(now):
            return False
        if now - started >= PIN_WITHIN:
            return False
        self._table[name] = Reservation(current.token, current.creator, current.expires, True)
        return True

    def release(self, name: str, token: str) -> None:
        current = self._table.get(name)
        if current is not None and current.token == token:
            del self._table[name]

    def purge(self, now: float) -> None:
        for name in [n for n, r in self._table.items() if not r.live(now)]:
            del self._table[name]
