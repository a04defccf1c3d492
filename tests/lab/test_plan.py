"""Pure planning of the lab: names, addresses, lengths, validation (no root needed)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.errors import UsageError
from zflock.lab.plan import (
    IFNAMSIZ,
    MAX_LAB_NAME,
    MAX_NODES,
    InvalidLabName,
    node_index,
    parse_size,
    plan_lab,
    subnet_octet,
    validate_lab_name,
    validate_node_count,
)

lab_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]|[a-z]", fullmatch=True)


def test_plan_three_nodes() -> None:
    plan = plan_lab("demo", 3, root=Path("/var/lib/zflock-lab"))
    assert [n.name for n in plan.nodes] == ["node1", "node2", "node3"]
    assert [n.netns for n in plan.nodes] == [
        "zfl-demo-node1",
        "zfl-demo-node2",
        "zfl-demo-node3",
    ]
    assert plan.bridge == "zfl-demo"
    assert [n.host_veth for n in plan.nodes] == ["zf1-demo", "zf2-demo", "zf3-demo"]
    assert all(n.node_veth == "eth0" for n in plan.nodes)
    base = plan.subnet.rsplit(".", 1)[0]
    assert plan.host_address == f"{base}.1"
    assert [n.address for n in plan.nodes] == [f"{base}.11", f"{base}.12", f"{base}.13"]
    assert plan.dir == Path("/var/lib/zflock-lab/demo")
    assert plan.state_file == Path("/var/lib/zflock-lab/demo.json")
    assert plan.nodes[1].pool_file == Path("/var/lib/zflock-lab/demo/node2/tank.img")
    assert plan.node("node2").address == f"{base}.12"


@given(name=lab_names, nodes=st.integers(1, MAX_NODES))
def test_interface_names_fit_and_are_distinct(name: str, nodes: int) -> None:
    plan = plan_lab(name, nodes)
    ifnames = [plan.bridge, *(n.host_veth for n in plan.nodes)]
    assert all(len(i) <= IFNAMSIZ for i in ifnames)
    assert len(set(ifnames)) == len(ifnames)
    net = ipaddress.ip_network(plan.subnet)
    addrs = [plan.host_address, *(n.address for n in plan.nodes)]
    assert len(set(addrs)) == len(addrs)
    assert all(ipaddress.ip_address(a) in net for a in addrs)
    assert net.subnet_of(ipaddress.ip_network("10.77.0.0/16"))
    assert all(a != str(net.network_address) and a != str(net.broadcast_address) for a in addrs)


@given(a=lab_names, b=lab_names)
def test_two_labs_never_share_an_interface_name(a: str, b: str) -> None:
    if a == b:
        return
    pa, pb = plan_lab(a, MAX_NODES), plan_lab(b, MAX_NODES)
    names_a = {pa.bridge, *(n.host_veth for n in pa.nodes), *(n.netns for n in pa.nodes)}
    names_b = {pb.bridge, *(n.host_veth for n in pb.nodes), *(n.netns for n in pb.nodes)}
    assert not names_a & names_b


def test_subnet_is_stable_and_skips_taken() -> None:
    first = subnet_octet("demo")
    assert first == subnet_octet("demo")
    assert 1 <= first <= 254
    second = subnet_octet("demo", {first})
    assert second != first
    plan = plan_lab("demo", 2, taken_subnets={first})
    assert plan.subnet == f"10.77.{second}.0/24"
    with pytest.raises(UsageError, match="no free lab subnet"):
        subnet_octet("demo", set(range(1, 255)))


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "must not be empty"),
        ("a" * (MAX_LAB_NAME + 1), f"at most {MAX_LAB_NAME} characters"),
        ("Lab", "character 'L' not allowed"),
        ("a_b", "character '_' not allowed"),
        ("a;b", "character ';' not allowed"),
        ("a b", "character ' ' not allowed"),
        ("ä", "character 'ä' not allowed"),
        ("1lab", "must start with a letter"),
        ("-lab", "must start with a letter"),
        ("lab-", "must not end with '-'"),
        ("../x", "character '.' not allowed"),
    ],
)
def test_invalid_lab_names_name_the_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidLabName) as err:
        validate_lab_name(name)
    assert rule in str(err.value)
    assert repr(name) in str(err.value)
    assert isinstance(err.value, UsageError)


@pytest.mark.parametrize("name", ["a", "lab", "t1234-ab", "a" * MAX_LAB_NAME, "a-b-c"])
def test_valid_lab_names(name: str) -> None:
    assert validate_lab_name(name) == name


@pytest.mark.parametrize("nodes", [0, -1, MAX_NODES + 1, 50])
def test_node_count_bounds(nodes: int) -> None:
    with pytest.raises(UsageError, match="between 1 and 16"):
        validate_node_count(nodes)
    with pytest.raises(UsageError):
        plan_lab("demo", nodes)


def test_node_index() -> None:
    assert node_index("node1") == 1
    assert node_index("node12") == 12
    assert node_index("node0") is None
    assert node_index("node01") is None
    assert node_index("nodex") is None


@pytest.mark.parametrize(
    ("text", "size"),
    [("1G", 1 << 30), ("256M", 256 << 20), ("256MiB", 256 << 20), ("2g", 2 << 30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1X", "-1G", "1.5G", "1M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)
