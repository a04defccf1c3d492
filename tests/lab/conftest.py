"""Fixtures for the lab's own tests: a shared 3-node lab and "what the machine has" snapshots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.labfixture import lab_session, lab_unavailable_reason, unique_lab_name
from zflock.lab import LabState


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    """A running 3-node lab (256M pools) shared by one test module, always taken down."""
    with lab_session(nodes=3) as state:
        yield state


@pytest.fixture
def needs_lab() -> None:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab_name() -> str:
    """A fresh lab name for a test that brings its own lab up (and down)."""
    return unique_lab_name("c")
