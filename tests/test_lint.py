"""ruff and mypy are part of the test suite, so the one test command also checks style,
the never-a-shell rules (S602/S604/S605) that the project relies on, and the
type hints (a call to a method that does not exist fails here, not in production)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["zflock", "tests", "bench"]


def ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed (pip install -e '.[test]')")
    return [exe]


def test_ruff_check() -> None:
    done = subprocess.run(
        [*ruff(), "check", *[p for p in PATHS if (ROOT / p).exists()]],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format() -> None:
    done = subprocess.run(
        [*ruff(), "format", "--check", *[p for p in PATHS if (ROOT / p).exists()]],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy() -> None:
    exe = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if exe is None:
        pytest.fail("mypy is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [exe, "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
