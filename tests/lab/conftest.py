"""Fixtures for the lab's own tests: a shared 3-node lab and "what the machine has" snapshots."""

from __future__ import annotations

import pytest

from tests.labfixture import lab_fixture, lab_unavailable_reason, unique_lab_name

# A running 3-node lab (256M pools) shared by one test module, always taken
# down; made by the same factory other test packages use.
lab = lab_fixture(nodes=3, scope="module")


@pytest.fixture
def needs_lab() -> None:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab_name() -> str:
    """A fresh lab name for a test that brings its own lab up (and down)."""
    return unique_lab_name("c")
