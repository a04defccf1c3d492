"""The scheduler's rescan: which copies of one `zfs get -d 1` of the pool root it
schedules (agent/scheduler.scheduled_policies, pure over the listed datasets)."""

from __future__ import annotations

from zflock.agent.scheduler import SCHEDULE_PROPERTIES, scheduled_policies
from zflock.zfs import Dataset

ROOT = "tank/zflock"
RULES = "1x1h(keep=all) | 24x1h | 14x1d"


def copy(name: str, role: str = "primary", every: str | None = "30s", **extra: str) -> Dataset:
    props = {
        "zflock:volume": name,
        "zflock:id": "0f2b7c1e-0000-4000-8000-000000000001",
        "zflock:epoch": "1",
        "zflock:role": role,
        "zflock:replicate-to": "node2",
        "zflock:keep": RULES,
        "zflock:keep-replica": "last=5",
        **({"zflock:every": every} if every else {}),
        **extra,
    }
    return Dataset(name=f"{ROOT}/{name}", type="filesystem", properties=props)


def test_only_continuous_primaries_not_moving_are_scheduled() -> None:
    listed = [
        Dataset(name=ROOT, type="filesystem"),
        copy("kept"),
        copy("replica", role="replica"),
        copy("once", every=None),  # one sync: no schedule
        copy("moving", **{"zflock:move": "node1->node2"}),
        copy("damaged", **{"zflock:keep": "nonsense"}),
        Dataset(name=f"{ROOT}/foreign", type="filesystem", properties={"compression": "on"}),
        Dataset(name=f"{ROOT}/kept@zflock-x", type="snapshot", properties=copy("x").properties),
        Dataset(name=f"{ROOT}/kept/child", type="filesystem", properties=copy("child").properties),
    ]
    policies = scheduled_policies(ROOT, listed)
    assert set(policies) == {"kept"}
    assert policies["kept"].every == 30
    assert policies["kept"].targets == ("node2",)
    assert policies["kept"].keep_replica.text() == "last=5"


def test_the_rescan_reads_what_the_decision_needs() -> None:
    needed = {"zflock:volume", "zflock:role", "zflock:every", "zflock:replicate-to", "zflock:move"}
    assert needed <= set(SCHEDULE_PROPERTIES)
