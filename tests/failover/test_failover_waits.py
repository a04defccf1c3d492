"""A failover that finds its target still receiving the dead primary's last stream
waits for that stream to be given up, then promotes (docs/failover.md; agent/failover.py
FROM_PRIMARY, PRIMARY_GONE). Before, it was refused as busy until the agents'
keepalive dropped the silent connection, 15-20 s; the other failover tests meet this
only by chance, and retry.

Three nodes under `one_writable_copy`. node1's stream to node2 is slowed (tbf on
node2's link) so that it is still running when node1's power is cut; the failover
is asked at once, with --force (the test does not wait out the self-fence time),
and must succeed on its first call, after node2's agent said it waits.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.agentlab import AgentLab, patience, scaled_mib, wait_until
from tests.failover.test_failover import power_cut
from tests.move.conftest import copy_state, one_writable_copy, throttled
from zflock.lab import agents

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]

VOLUME = "fowait"


def streaming(lab: AgentLab, at_least: int) -> bool:
    """node1's sync of VOLUME has sent `at_least` bytes (its job, as `zflock status` shows)."""
    r = lab.cli("status", "--json")
    jobs = json.loads(r.stdout)["jobs"] if r.returncode == 0 and r.stdout else []
    return any(j["volume"] == VOLUME and int(j["bytes"]) >= at_least for j in jobs)


def test_a_failover_waits_for_the_dead_primarys_cut_stream(failover_lab: AgentLab) -> None:
    lab = failover_lab
    assert lab.cli("create", VOLUME, "--on", "node1").returncode == 0
    lab.sh("node1", f"echo before > /zflock/{VOLUME}/kept")
    assert lab.cli("replicate", VOLUME, "--to", "node2").returncode == 0
    lab.sh("node1", f"dd if=/dev/urandom of=/zflock/{VOLUME}/late bs=1M "
                    f"count={scaled_mib(48)} 2>/dev/null")  # fmt: skip
    with one_writable_copy(lab, VOLUME):
        with throttled(lab.state.nodes["node2"].host_veth, "8mbit"):  # ~1 MB/s: a minute
            sync = subprocess.Popen(
                [sys.executable, "-m", "zflock", "replicate", VOLUME, "--to", "node2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lab.env,
            )  # fmt: skip
            try:
                wait_until("node1's stream to node2", lambda: streaming(lab, 1 << 20),
                           timeout=patience(60), interval=0.5)  # fmt: skip
                power_cut(lab, "node1", [VOLUME])
            finally:
                sync.kill()  # the CLI following the cut sync: by the PID it recorded
                sync.wait(timeout=30)
        r = lab.cli("failover", VOLUME, "--force", "--json", "--timeout", f"{patience(3):g}")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert (report["node"], report["epoch"]) == ("node2", 2), report
    log = agents.agent_log(lab.state.nodes["node2"]).read_text()
    assert any(
        f"volume={VOLUME} " in line and "failover waits" in line and "receive" in line
        for line in log.splitlines()
    ), "node2 did not wait for the cut receive: the test did not test it"
    state = copy_state(lab, "node2", VOLUME)
    assert (state["zflock:role"], state["readonly"], state["mounted"]) == (
        "primary", "off", "yes",
    )  # fmt: skip
    # The cut stream's data is the loss window: not there; what the last sync had is.
    assert lab.sh("node2", f"cat /zflock/{VOLUME}/kept").strip() == "before"
    assert lab.node_run("node2", "test", "-e", f"/zflock/{VOLUME}/late").returncode != 0
