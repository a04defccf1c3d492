"""A plain-text table for listings that can be long (`zflock ls` of a thousand volumes).

rich's Table measures and wraps every cell through its renderer: about 4 s
for 1000 rows of 8 columns on the lab machine. Listings need none of that:
columns padded to their widest cell, two spaces apart, a bold header, each
row on one line (never wrapped: a pipe to grep or awk gets whole rows). The
look matches `rich.table.Table(box=None, pad_edge=False)`, which the other,
short tables use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.segment import Segment
from rich.style import Style

HEADER = Style(bold=True)
GAP = "  "


def _width(text: str) -> int:
    # Most cells are ASCII, whose length is their width: cell_len is slower.
    return len(text) if text.isascii() else cell_len(text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


@dataclass
class PlainTable:
    """Columns and rows of plain strings (no markup is interpreted)."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, ...]] = field(default_factory=list)

    def add_column(self, header: str) -> None:
        if self.rows:
            raise ValueError("add every column before the first row")
        self.columns.append(header)

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(self.columns)}")
        self.rows.append(cells)

    def widths(self) -> list[int]:
        widths = [_width(c) for c in self.columns]
        for row in self.rows:
            for i, cell in enumerate(row):
                n = _width(cell)
                if n > widths[i]:
                    widths[i] = n
        return widths

    def lines(self) -> Iterator[str]:
        """The rows as text, header first, without trailing spaces."""
        widths = self.widths()
        for row in (tuple(self.columns), *self.rows):
            yield GAP.join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for i, line in enumerate(self.lines()):
            yield Segment(line, HEADER if i == 0 else None)
            yield Segment.line()
