"""The OpenZFS tier's selection files name tests that exist (a typo would only show
inside the guest, after minutes of boot and build)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELECTIONS = sorted((ROOT / "tests" / "openzfs-vm").glob("selection*.txt"))


def test_there_are_selections() -> None:
    assert [p.name for p in SELECTIONS] == ["selection-full.txt", "selection.txt"]


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda p: p.name)
def test_selection_names_existing_tests(selection: Path) -> None:
    paths = []
    for line in selection.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            paths.append(line)
    assert paths, f"{selection.name} selects nothing"
    for path in paths:
        file, _, name = path.partition("::")
        assert (ROOT / file).exists(), f"{selection.name}: no {file}"
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / file).read_text(), (
                f"{selection.name}: no test {name} in {file}"
            )
