"""The plain table of long listings looks like rich's box-less table, and is fast to print."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from zflock.cli.table import PlainTable

CELL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/.()", min_size=1, max_size=12)


def _print(renderable: object, **kwargs: object) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=500, highlight=False, color_system=None).print(renderable, **kwargs)  # type: ignore[arg-type]
    return [line.rstrip() for line in out.getvalue().splitlines()]


# No deadline: rich renders slowly on a loaded CI machine (seen: DeadlineExceeded).
@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda n: st.tuples(
            st.lists(CELL, min_size=n, max_size=n),
            st.lists(st.lists(CELL, min_size=n, max_size=n), max_size=6),
        )
    )
)
def test_same_text_as_rich(table: tuple[list[str], list[list[str]]]) -> None:
    header, rows = table
    plain, rich_table = PlainTable(), Table(box=None, pad_edge=False)
    for h in header:
        plain.add_column(h)
        rich_table.add_column(h)
    for row in rows:
        plain.add_row(*row)
        rich_table.add_row(*row)
    assert _print(plain, soft_wrap=True) == _print(rich_table)


def test_markup_is_not_interpreted_and_rows_are_never_cut() -> None:
    t = PlainTable()
    t.add_column("NAME")
    t.add_column("WHERE")
    t.add_row("[bold]x[/bold]", "/very/" + "long/" * 40)
    out = io.StringIO()
    Console(file=out, width=40, color_system=None).print(t, soft_wrap=True)
    assert out.getvalue().splitlines()[1] == "[bold]x[/bold]  /very/" + "long/" * 40


def test_rows_must_fit_the_columns() -> None:
    t = PlainTable()
    t.add_column("A")
    with pytest.raises(ValueError, match="a row of 2 cells"):
        t.add_row("x", "y")
    t.add_row("x")
    with pytest.raises(ValueError, match="before the first row"):
        t.add_column("B")
