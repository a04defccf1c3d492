"""The pre-copy convergence decision, over synthetic round histories (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.move.converge import (
    ABORT,
    CONTINUE,
    CUTOVER,
    MEASURABLE,
    Limits,
    Round,
    decide,
    predict_final,
    send_rate,
)

MiB = 1 << 20


def rounds(*spec: tuple[str, int, float]) -> list[Round]:
    return [Round(i + 1, kind, b, s) for i, (kind, b, s) in enumerate(spec)]


def test_a_full_round_alone_never_converges_when_it_was_slow() -> None:
    d = decide(rounds(("full", 2000 * MiB, 20.0)), Limits())
    assert d.action == CONTINUE


def test_shrinking_deltas_converge_when_the_prediction_fits_half_the_budget() -> None:
    # 100 MiB/s link, writer at ~5 MiB/s: 20 s full, 100 MiB, then 5 MiB ...
    history = rounds(("full", 2000 * MiB, 20.0), ("incremental", 100 * MiB, 1.1))
    d = decide(history, Limits(max_downtime=1.0))
    assert d.action == CONTINUE, d
    history += [Round(3, "incremental", 5 * MiB, 0.15)]
    d = decide(history, Limits(max_downtime=1.0))
    assert d.action == CUTOVER and d.reason.startswith("converged"), d
    assert d.predicted_final_s is not None and d.predicted_final_s <= 0.5


def test_a_tiny_delta_is_fixed_cost_and_cuts_over() -> None:
    # zfs-fuse: each round costs ~0.6 s whatever it carries.
    d = decide(rounds(("incremental", 1560, 0.6)), Limits(max_downtime=1.0))
    assert d.action == CUTOVER and "fixed cost" in d.reason


def test_a_writer_faster_than_the_link_stalls_and_cuts_over_or_aborts() -> None:
    history = rounds(
        ("full", 500 * MiB, 5.0),
        ("incremental", 400 * MiB, 4.0),
        ("incremental", 400 * MiB, 4.0),
        ("incremental", 410 * MiB, 4.1),
        ("incremental", 405 * MiB, 4.05),
    )
    d = decide(history, Limits(max_downtime=1.0))
    assert d.action == CUTOVER and d.reason.startswith("not converging"), d
    strict = decide(history, Limits(max_downtime=1.0, strict=True))
    assert strict.action == ABORT


def test_the_round_limit_ends_pre_copy() -> None:
    history = rounds(*[("incremental", (100 - 20 * i) * MiB, 2.0 - 0.3 * i) for i in range(3)])
    assert decide(history, Limits(max_rounds=4)).action == CONTINUE
    d = decide(history, Limits(max_rounds=3))
    assert d.action == CUTOVER and "round limit" in d.reason


def test_rate_ignores_rounds_too_small_to_measure() -> None:
    history = rounds(("incremental", 100, 0.3), ("incremental", 50 * MiB, 0.8))
    # The 0.3 s fixed cost is taken off the big round: 50 MiB in 0.5 s.
    assert send_rate(history) == pytest.approx(100 * MiB)
    assert send_rate(rounds(("incremental", MEASURABLE - 1, 0.3))) is None


def test_prediction_scales_the_last_delta_by_the_window() -> None:
    history = rounds(("incremental", 10 * MiB, 1.0), ("incremental", 4 * MiB, 0.5))
    predicted_bytes, _ = predict_final(history)
    assert predicted_bytes == 2 * MiB  # the same write rate over half the time


def test_decide_needs_a_round() -> None:
    with pytest.raises(ValueError):
        decide([], Limits())


history_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=1 << 34),
        st.floats(min_value=0.001, max_value=600, allow_nan=False),
    ),
    min_size=1,
    max_size=30,
).map(
    lambda xs: [
        Round(i + 1, "full" if i == 0 else "incremental", b, s) for i, (b, s) in enumerate(xs)
    ]
)


@given(history_strategy, st.floats(0.05, 30), st.integers(1, 30), st.booleans())
def test_pre_copy_always_ends_within_the_round_limit(
    history: list[Round], budget: float, max_rounds: int, strict: bool
) -> None:
    limits = Limits(max_downtime=budget, max_rounds=max_rounds, strict=strict)
    d = decide(history, limits)
    assert d.action in (CONTINUE, CUTOVER, ABORT)
    if len(history) >= max_rounds:
        assert d.action != CONTINUE
    if d.action == ABORT:
        assert strict
    if d.action == CUTOVER and d.reason.startswith("converged: final"):
        assert d.predicted_final_s is not None and d.predicted_final_s <= budget / 2
    assert d.reason


@given(history_strategy, st.floats(0.05, 30))
def test_predictions_are_finite_and_non_negative(history: list[Round], budget: float) -> None:
    predicted_bytes, predicted_s = predict_final(history)
    assert predicted_bytes >= 0 and 0 <= predicted_s < float("inf")
