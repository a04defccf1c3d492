"""The Docker volume plugin on a real 2-node lab, each node with its own dockerd.

One module-scoped lab; the tests run in file order and build on each other
where the issue's story does (a volume written on node1 is found on node2).
Every container is `--network none`, from an image imported from busybox-static.
"""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agentlab import patience, wait_until
from tests.docker.dockerlab import IMAGE, DockerLab, docker_lab_session, plugin_post
from zflock.lab import agents

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def dl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    with docker_lab_session(tmp_path_factory.mktemp("docker")) as lab:
        yield lab


def run_args(volume: str, *command: str, detach: bool = False) -> list[str]:
    mount = f"type=volume,src={volume},dst=/data,volume-driver=zflock"
    return ["run", *(["-d"] if detach else ["--rm"]), "--network", "none", "--mount", mount,
            IMAGE, *command]  # fmt: skip


def zflock_ls(dl: DockerLab, name: str) -> dict[str, Any]:
    r = dl.agent_lab.cli("ls", "--json", name)
    assert r.returncode == 0, r.stderr
    volumes: list[dict[str, Any]] = json.loads(r.stdout)["volumes"]
    assert len(volumes) == 1, volumes
    return volumes[0]


def plugin_call(dl: DockerLab, node: str, endpoint: str, request: bytes) -> dict[str, Any]:
    """POST to the node's plugin socket as dockerd would (for input docker itself refuses)."""
    sock = agents.docker_plugin_dir(dl.agent_lab.state.nodes[node]) / "zflock.sock"
    return plugin_post(sock, endpoint, request)


def test_docker_volume_create_appears_in_zflock_ls(dl: DockerLab) -> None:
    dl["node1"].docker("volume", "create", "-d", "zflock", "-o", "size=64M",
                       "-o", "replicas=node2", "shop")  # fmt: skip
    volume = zflock_ls(dl, "shop")
    assert volume["primary"] == "node1"
    primary, replica = volume["copies"]
    assert primary["quota"] == 64 << 20
    assert (replica["node"], replica["role"]) == ("node2", "replica")
    # The same name on node2 is that volume, never a second one.
    dl["node2"].docker("volume", "create", "-d", "zflock", "shop")
    again = zflock_ls(dl, "shop")
    assert again["id"] == volume["id"] and len(again["copies"]) == 2
    # every: the policy `zflock replicate --to node2 --every 1h` stores, on the primary.
    dl["node2"].docker("volume", "create", "-d", "zflock", "-o", "replicas=node1",
                       "-o", "every=1h", "kept")  # fmt: skip
    kept = zflock_ls(dl, "kept")
    assert kept["primary"] == "node2" and [c["node"] for c in kept["copies"]] == ["node2", "node1"]
    policy = dl.agent_lab.zget("node2", dl.agent_lab.ds("node2", "kept"),
                               "zflock:replicate-to", "zflock:every")  # fmt: skip
    assert policy == {"zflock:replicate-to": "node1", "zflock:every": "1h"}, policy
    dl["node2"].docker("volume", "rm", "kept")


def test_the_plugin_socket_is_root_only(dl: DockerLab) -> None:
    for node in dl.agent_lab.state.nodes.values():
        info = (agents.docker_plugin_dir(node) / "zflock.sock").stat()
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_uid == 0


def test_bad_names_and_options_are_refused_without_a_change(dl: DockerLab) -> None:
    before = dl.agent_lab.zfs_state()
    for opts, error in (
        (["-o", "colour=red"], "unknown option 'colour'"),
        (["-o", "size=lots"], "invalid size 'lots'"),
        (["-o", "replicas=node1"], "node1 will hold the primary"),
        (["-o", "replicas=nodeX"], "unknown node 'nodeX'"),
        (["-o", "every=30s"], "every needs replicas"),
        (["-o", "replicas=node2", "-o", "every=soon"], "invalid interval 'soon'"),
    ):
        r = dl["node1"].docker("volume", "create", "-d", "zflock", *opts, "other", check=False)
        assert r.returncode != 0 and error in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    long_name = "v" * 300  # Docker accepts it; a ZFS component may not be this long
    r = dl["node1"].docker("volume", "create", "-d", "zflock", long_name, check=False)
    assert r.returncode != 0 and "longer than 255 characters" in r.stderr, r.stderr
    # What dockerd would never send, straight to the socket: one-line Err, nothing else.
    for endpoint, body in (
        ("/VolumeDriver.Create", b'{"Name": "../etc"}'),
        ("/VolumeDriver.Create", b'{"Name": "a/b"}'),
        ("/VolumeDriver.Mount", b'{"Name": "shop", "ID": "x,node1/y"}'),
        ("/VolumeDriver.Mount", b'{"Name": 7}'),
        ("/VolumeDriver.Remove", b"not json"),
        ("/VolumeDriver.Create", b'{"Name": "ok", "Opts": {"size": 5}}'),
    ):
        answer = plugin_call(dl, "node1", endpoint, body)
        assert answer["Err"] and "\n" not in answer["Err"], (endpoint, body, answer)
    assert dl.agent_lab.zfs_state() == before
    r = dl.agent_lab.cli("ls", "--json")
    assert [v["name"] for v in json.loads(r.stdout)["volumes"]] == ["shop"]


def test_volume_follows_its_container_with_every_record(dl: DockerLab) -> None:
    # node1: numbered records, each fsynced before it is acknowledged on stdout
    # (the acks live outside the volume).
    writer = "for i in $(seq 1 200); do echo rec-$i >> /data/records; sync; echo ack-$i; done"
    r = dl["node1"].docker(*run_args("shop", "sh", "-c", writer))
    acked = re.findall(r"ack-(\d+)", r.stdout)
    assert len(acked) == 200
    # node2: the first write after `docker run` is timed (the move happens in Mount).
    reader = "echo node2 >> /data/records; sync; echo first-write; cat /data/records"
    started = time.monotonic()
    proc = dl["node2"].popen(*run_args("shop", "sh", "-c", reader))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_write_s = time.monotonic() - started
    out = proc.stdout.read()  # through the same buffer readline filled
    assert proc.wait(timeout=patience(120)) == 0 and first.strip() == "first-write", proc.stderr
    found = set(re.findall(r"rec-(\d+)", out))
    assert set(acked) <= found, sorted(set(acked) - found)[:5]
    volume = zflock_ls(dl, "shop")
    assert volume["primary"] == "node2"
    log = agents.agent_log(dl.agent_lab.state.nodes["node2"]).read_text()
    downtime = re.findall(r"moved shop node1 -> node2 for a container: downtime ([\d.]+) s", log)
    assert downtime, "the move's downtime is not in node2's agent log"
    status = dl.agent_lab.cli("status", "--json")
    jobs = json.loads(status.stdout)["jobs"]
    assert any(j["kind"] == "move" and j["volume"] == "shop" and j["target"] == "node2"
               and j["state"] == "done" for j in jobs), jobs  # fmt: skip
    # The same on a volume already here: what Docker itself costs, without a move.
    started = time.monotonic()
    local = dl["node2"].popen(*run_args("shop", "sh", "-c", "echo x >> /data/x; sync; echo w"))
    assert local.stdout is not None and local.stdout.readline().strip() == "w"
    local_s = time.monotonic() - started
    assert local.wait(timeout=patience(60)) == 0
    print(f"\nfollow-the-container: docker run on node2 to first write {first_write_s:.2f} s "
          f"(move downtime {downtime[-1]} s); on a local volume {local_s:.2f} s")  # fmt: skip


def test_mount_elsewhere_refused_while_a_container_holds_it(dl: DockerLab) -> None:
    ticker = "while true; do date >> /data/ticks; sleep 0.2; done"
    dl["node2"].docker("run", "-d", "--name", "holder", "--network", "none", "--mount",
                       "type=volume,src=shop,dst=/data,volume-driver=zflock", IMAGE,
                       "sh", "-c", ticker)  # fmt: skip
    before = dl.agent_lab.zfs_state()
    r = dl["node1"].docker(*run_args("shop", "true"), check=False)
    assert r.returncode != 0
    assert "volume shop is in use on node node2 by container mount" in r.stderr, r.stderr
    assert dl.agent_lab.zfs_state() == before
    assert zflock_ls(dl, "shop")["primary"] == "node2"


def test_volume_ls_and_inspect_show_zflock_status(dl: DockerLab) -> None:
    r = dl["node1"].docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}")
    assert "zflock shop" in r.stdout.splitlines()
    (info,) = json.loads(dl["node2"].docker("volume", "inspect", "shop").stdout)
    status = info["Status"]
    assert status["primary"] == "node2" and status["epoch"] == 2
    assert [rep["node"] for rep in status["replicas"]] == ["node1"]
    assert status["mounts_here"] == 1
    assert info["Mountpoint"].endswith("/shop")


def test_agent_restart_keeps_the_mount_and_its_count(dl: DockerLab) -> None:
    state = dl.agent_lab.state
    node2 = state.nodes["node2"]
    agents.stop(node2)
    agents.start(state, node2)
    dl.agent_lab.cli("nodes")  # both agents answer again
    ticks = dl["node2"].docker("exec", "holder", "wc", "-l", "/data/ticks").stdout.split()[0]
    wait_until(
        "the container to keep writing",
        lambda: (
            dl["node2"].docker("exec", "holder", "wc", "-l", "/data/ticks").stdout.split()[0]
            != ticks
        ),
    )
    (info,) = json.loads(dl["node2"].docker("volume", "inspect", "shop").stdout)
    assert info["Status"]["mounts_here"] == 1
    r = dl["node1"].docker(*run_args("shop", "true"), check=False)
    assert "in use on node node2" in r.stderr, r.stderr
    dl["node2"].docker("rm", "-f", "holder")
    (info,) = json.loads(dl["node2"].docker("volume", "inspect", "shop").stdout)
    assert info["Status"]["mounts_here"] == 0


def test_dockerd_restart_activates_the_plugin_again(dl: DockerLab) -> None:
    dl["node1"].restart()
    (info,) = json.loads(dl["node1"].docker("volume", "inspect", "shop").stdout)
    assert info["Driver"] == "zflock" and info["Status"]["primary"] == "node2"
    r = dl["node1"].docker(*run_args("shop", "sh", "-c", "tail -n 1 /data/records"))
    assert r.stdout.strip() == "node2"  # and the volume followed back to node1
    assert zflock_ls(dl, "shop")["primary"] == "node1"


def restart_agent(dl: DockerLab, node: str) -> None:
    state = dl.agent_lab.state
    agents.stop(state.nodes[node])
    agents.start(state, state.nodes[node])


def test_a_move_longer_than_docker_waits_goes_on_in_the_background(dl: DockerLab) -> None:
    dl["node1"].docker("volume", "create", "-d", "zflock", "slow")
    fill = "dd if=/dev/urandom of=/data/blob bs=1M count=16 2>/dev/null; sync; md5sum /data/blob"
    digest = dl["node1"].docker(*run_args("slow", "sh", "-c", fill)).stdout.split()[0]
    # node2's Mount waits 1 s; the source's pre-cutover hook holds the move for 3 s (a
    # move of 16 MiB alone can take well under a second on an idle machine).
    nodes = dl.agent_lab.state.nodes
    configs = {n: agents.agent_dir(nodes[n]) / "agent.toml" for n in ("node1", "node2")}
    originals = {n: c.read_text() for n, c in configs.items()}
    configs["node2"].write_text(originals["node2"] + "docker_mount_timeout = 1.0\n")
    hold = '[volumes.slow.hooks]\npre_cutover = ["sleep", "3"]\n'
    configs["node1"].write_text(originals["node1"] + hold)
    for node in configs:
        restart_agent(dl, node)
    try:
        r = dl["node2"].docker(*run_args("slow", "md5sum", "/data/blob"), check=False)
        assert r.returncode != 0, r.stdout
        assert "takes longer than 1 s; it goes on in the background" in r.stderr, r.stderr
        wait_until("the move to finish", lambda: zflock_ls(dl, "slow")["primary"] == "node2")
        r = dl["node2"].docker(*run_args("slow", "md5sum", "/data/blob"))
        assert r.stdout.split()[0] == digest
    finally:
        for node, config in configs.items():
            config.write_text(originals[node])
            restart_agent(dl, node)
    dl["node1"].docker("volume", "rm", "slow")  # the primary on node2 and node1's replica
    r = dl.agent_lab.cli("ls", "--json", "slow")
    assert r.returncode != 0 and "not found" in r.stderr


def test_docker_volume_rm_follows_zflock_destroy(dl: DockerLab) -> None:
    dl["node1"].docker("run", "-d", "--name", "holder1", "--network", "none", "--mount",
                       "type=volume,src=shop,dst=/data,volume-driver=zflock", IMAGE,
                       "sleep", "600")  # fmt: skip
    before = dl.agent_lab.zfs_state()
    r = dl["node2"].docker("volume", "rm", "shop", check=False)
    assert r.returncode != 0 and "in use on node node1" in r.stderr, r.stderr
    assert dl.agent_lab.zfs_state() == before
    dl["node1"].docker("rm", "-f", "holder1")
    dl["node2"].docker("volume", "rm", "shop")
    r = dl.agent_lab.cli("ls", "--json")
    assert json.loads(r.stdout)["volumes"] == []
    for node in ("node1", "node2"):
        assert dl.agent_lab.datasets(node) == [dl.agent_lab.ds(node)]
