"""The shipped alert rules: valid for Prometheus, and they fire on the series agents export."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ALERTS = Path(__file__).resolve().parents[2] / "docs" / "alerts"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool not found: install Debian's prometheus package (.ci/setup does)")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, cwd=ALERTS, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_rules_are_valid() -> None:
    r = promtool("check", "rules", "zflock.rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 6 rules found" in r.stdout


def test_rules_fire_when_and_only_when_they_should() -> None:
    r = promtool("test", "rules", "zflock.rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
