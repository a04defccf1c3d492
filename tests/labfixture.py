"""Reusable lab fixtures for any test package (a module, not a conftest, so it can be imported).

    from tests.labfixture import lab_fixture, lab_session

    lab3 = lab_fixture(nodes=3)                 # in a conftest: a session-scoped fixture

    @pytest.fixture(scope="module")
    def my_lab():
        with lab_session(nodes=2) as state:     # or by hand, any scope
            yield state

Each lab gets a unique name (PID + random suffix), so parallel test runs of
several engineers never collide, and it is always taken down, also when the
test or the bring-up fails. Tests are skipped (with the one-line reason) on a
machine that cannot run a lab (no root, no zfs-fuse, no namespaces).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from zflock.lab.plan import MAX_LAB_NAME

LAB_POOL_SIZE = 256 << 20  # small: tests share 2 cores and one disk


_counter = itertools.count()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def unique_lab_name(prefix: str = "t") -> str:
    """A lab name no other run uses: prefix, PID, a per-process counter, random hex.

    PID and counter make it unique among running processes; the random part
    keeps it apart from a leftover of a crashed run with a recycled PID.
    """
    name = f"{prefix}{_base36(os.getpid())}{_base36(next(_counter))}"
    name += secrets.token_hex(2)[: max(0, MAX_LAB_NAME - len(name))]
    if len(name) > MAX_LAB_NAME or len(name) < len(prefix) + 3:
        raise ValueError(f"lab name prefix {prefix!r} is too long")
    return name


def lab_unavailable_reason() -> str | None:
    """Why a lab cannot run on this machine, or None."""
    from zflock.lab.preflight import LabPrerequisiteMissing, preflight

    try:
        preflight()
    except LabPrerequisiteMissing as exc:
        return str(exc)
    return None


@contextmanager
def lab_session(
    nodes: int = 3, *, pool_size: int = LAB_POOL_SIZE, prefix: str = "t"
) -> Iterator[Any]:
    """Bring up a uniquely named lab, yield its LabState, always take it down."""
    from zflock import lab

    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = unique_lab_name(prefix)
    try:
        yield lab.up(name, nodes, pool_size=pool_size)
    finally:
        # up() removes a half-built lab itself; down() also covers processes
        # a test added to the state (an agent) and is a no-op otherwise.
        lab.down(name)


def lab_fixture(
    nodes: int = 3, *, scope: str = "session", pool_size: int = LAB_POOL_SIZE, prefix: str = "t"
) -> Callable[..., Any]:
    """A pytest fixture (default session scope) yielding a running lab's LabState."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _lab() -> Iterator[Any]:
        with lab_session(nodes, pool_size=pool_size, prefix=prefix) as state:
            yield state

    return _lab
