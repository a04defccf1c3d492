"""`[deadlines]` in agent.toml: defaults, overrides, and every bad value named."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from zflock.cluster.config import ConfigError, MoveDeadlines, load_agent_config

BASE = 'node = "node1"\npool_root = "tank/zflock"\n'


def load(tmp_path: Path, text: str) -> MoveDeadlines:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + text)
    return load_agent_config(path).deadlines


def test_defaults_are_seconds_not_minutes(tmp_path: Path) -> None:
    deadlines = load(tmp_path, "")
    assert deadlines == MoveDeadlines()
    for f in fields(MoveDeadlines):
        assert 1 <= getattr(deadlines, f.name) <= 60, f.name
    # One settle outlasts several resolve calls: it retries them.
    assert deadlines.settle >= 2 * deadlines.resolve


def test_every_key_can_be_set(tmp_path: Path) -> None:
    text = "[deadlines]\n" + "".join(
        f"{f.name} = {i + 1}\n" for i, f in enumerate(fields(MoveDeadlines))
    )
    deadlines = load(tmp_path, text)
    assert [getattr(deadlines, f.name) for f in fields(MoveDeadlines)] == [
        float(i + 1) for i in range(len(fields(MoveDeadlines)))
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[deadlines]\nfence = 0", "deadlines.fence: must be in (0, 3600] seconds, got 0"),
        ("[deadlines]\npromote = -1.5", "deadlines.promote: must be in (0, 3600]"),
        ("[deadlines]\nsettle = 86400", "deadlines.settle: must be in (0, 3600]"),
        ('[deadlines]\nverify = "10s"', "deadlines.verify: expected float, got str"),
        ("[deadlines]\nfinal-delta = 5", "deadlines.final-delta: unknown key"),
        ('deadlines = "fast"', "deadlines: expected dict"),
    ],
)
def test_bad_deadlines_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    message = str(err.value)
    assert expected in message and str(tmp_path / "agent.toml") in message
    assert "\n" not in message
