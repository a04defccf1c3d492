"""When to stop pre-copying and cut over (pure: round history in, decision out).

Each pre-copy round sends what was written while the previous round ran. If
the writer's rate is steady, the delta shrinks round after round as long as
sending is faster than writing, and the final delta (sent while the source is
fenced) is about what accumulates during the last round. So:

* predicted final bytes = last round's bytes x (last round's seconds /
  the round before's seconds): the same write rate over the last window;
* predicted final seconds = fixed cost + predicted bytes / send rate, where
  the fixed cost (snapshot, RPC, receive setup) is bounded by the shortest
  incremental round, and the send rate is the best any round of at least
  1 MiB achieved once that fixed cost is taken off;
* cut over when that fits in HALF the downtime budget: the other half is
  for fencing, verifying, promoting and mounting (and the hooks).

When the delta is under a MiB, what is left of a round is its fixed cost,
which no further round can shrink: cut over then too.

Rounds that stop shrinking mean the writer is as fast as the link: more
rounds cannot help, so cut over (or abort, when the operator asked for a
strict budget). A round limit bounds the whole thing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

CONTINUE = "continue"
CUTOVER = "cutover"
ABORT = "abort"


@dataclass(frozen=True)
class Round:
    number: int  # 1-based
    kind: str  # "full" | "incremental" | "none" (already up to date)
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Limits:
    max_downtime: float = 1.0  # seconds
    max_rounds: int = 8
    stall_rounds: int = 3  # this many rounds in a row without shrinking: stop
    shrink: float = 0.9  # a round "shrinks" when it is below this share of the one before
    strict: bool = False  # abort instead of cutting over when the budget is not met


@dataclass(frozen=True)
class Decision:
    action: str  # CONTINUE | CUTOVER | ABORT
    reason: str
    predicted_final_s: float | None = None
    predicted_final_bytes: int | None = None


# Rounds smaller than this say nothing about throughput: their time is fixed cost.
MEASURABLE = 1 << 20
# Throughput assumed before any round carried enough data to measure it.
DEFAULT_RATE = 10 << 20


def fixed_cost(rounds: Sequence[Round]) -> float:
    """Seconds a round costs whatever its size: at most the shortest incremental round."""
    incremental = [r.seconds for r in rounds if r.kind != "full"]
    return min(incremental) if incremental else 0.0


def send_rate(rounds: Sequence[Round]) -> float | None:
    """The best streaming rate any round achieved, its fixed cost taken off (None: unknown)."""
    fixed = fixed_cost(rounds)
    rates = [r.bytes / max(r.seconds - fixed, 1e-3) for r in rounds if r.bytes >= MEASURABLE]
    return max(rates) if rates else None


def predict_final(rounds: Sequence[Round]) -> tuple[int, float]:
    """(bytes, seconds) the final delta is expected to take, from the history so far."""
    last = rounds[-1]
    if len(rounds) >= 2 and rounds[-2].seconds > 0:
        predicted_bytes = int(last.bytes * (last.seconds / rounds[-2].seconds))
    else:
        predicted_bytes = last.bytes
    fixed = fixed_cost(rounds) if len(rounds) > 1 or last.kind != "full" else last.seconds
    rate = send_rate(rounds)
    if rate is None:
        # Nothing measurable moved yet: small deltas are fixed cost, big ones conservative.
        rate = float("inf") if predicted_bytes < MEASURABLE else DEFAULT_RATE
    return predicted_bytes, fixed + predicted_bytes / rate


def _stalled(rounds: Sequence[Round], limits: Limits) -> bool:
    if len(rounds) < limits.stall_rounds + 1:
        return False
    recent = rounds[-(limits.stall_rounds + 1) :]
    return all(b.bytes >= limits.shrink * a.bytes for a, b in itertools.pairwise(recent))


def decide(rounds: Sequence[Round], limits: Limits) -> Decision:
    """What to do after the last of `rounds` (at least one)."""
    if not rounds:
        raise ValueError("decide() needs at least one finished round")
    predicted_bytes, predicted_s = predict_final(rounds)
    budget = limits.max_downtime / 2
    # A full round says little about the write rate; its fixed cost is unknown.
    first_only = len(rounds) == 1 and rounds[0].kind == "full"
    if not first_only and predicted_s <= budget:
        return Decision(
            CUTOVER,
            f"converged: final delta ~{predicted_bytes} B in ~{predicted_s:.2f} s "
            f"fits the {limits.max_downtime:g} s budget",
            predicted_s,
            predicted_bytes,
        )
    if not first_only and predicted_bytes < MEASURABLE and rounds[-1].bytes < MEASURABLE:
        # All that is left is each round's fixed cost: more rounds cannot shrink it.
        return Decision(
            CUTOVER,
            f"converged: the delta is down to ~{predicted_bytes} B, the rest is fixed cost "
            f"(~{predicted_s:.2f} s)",
            predicted_s,
            predicted_bytes,
        )
    fallback = ABORT if limits.strict else CUTOVER
    if _stalled(rounds, limits):
        return Decision(
            fallback,
            f"not converging: {limits.stall_rounds} rounds without shrinking "
            f"(final delta ~{predicted_s:.2f} s)",
            predicted_s,
            predicted_bytes,
        )
    if len(rounds) >= limits.max_rounds:
        return Decision(
            fallback,
            f"round limit {limits.max_rounds} reached (final delta ~{predicted_s:.2f} s)",
            predicted_s,
            predicted_bytes,
        )
    if first_only:
        return Decision(CONTINUE, "after a full send, one more round measures the write rate")
    return Decision(
        CONTINUE,
        f"final delta ~{predicted_s:.2f} s would exceed half the budget",
        predicted_s,
        predicted_bytes,
    )
