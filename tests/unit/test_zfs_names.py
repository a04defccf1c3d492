"""Name validation by ZFS's rules (plus ours: no spaces, no leading '-')."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zflock.errors import UsageError
from zflock.zfs import (
    InvalidName,
    split_snapshot_name,
    validate_component,
    validate_dataset_name,
    validate_pool_name,
    validate_property_name,
    validate_snapshot_name,
    validate_user_property,
)
from zflock.zfs.names import validate_bookmark_name, validate_property_value

VALID_DATASETS = [
    "pool",
    "pool/a",
    "pool/a/b/c",
    "tank/zflock/shop-db",
    "p/a.b",
    "p/a..b",  # ".." is only invalid as a whole component
    "p/.hidden",
    "p/a:b_c-d.e",
    "P0ol/X",
    "p/" + "a" * 253,
]

INVALID_DATASETS = [
    ("", "empty"),
    ("/pool/a", "start with '/'"),
    ("pool/a/", "end with '/'"),
    ("pool//a", "empty component"),
    ("pool/a@snap", "'@' not allowed"),
    ("pool/a#mark", "'#' not allowed"),
    ("pool/a;b", "character ';' not allowed"),
    ("pool/a b", "character ' ' not allowed"),
    ("pool/a%b", "character '%' not allowed"),
    ("pool/a\nb", "not allowed"),
    ("pool/ä", "not allowed"),
    ("pool/-x", "must not start with '-'"),
    ("pool/..", "'..' is not a valid component"),
    ("pool/.", "'.' is not a valid component"),
    ("1pool/a", "must start with a letter"),
    ("p/" + "a" * 254, "longer than 255"),
]


@pytest.mark.parametrize("name", VALID_DATASETS)
def test_valid_dataset_names(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(("name", "rule"), INVALID_DATASETS)
def test_invalid_dataset_names(name: str, rule: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_dataset_name(name)
    assert rule in str(info.value)
    assert repr(name) in str(info.value)  # the message names the name
    assert isinstance(info.value, UsageError)


def test_error_message_example_from_the_contract() -> None:
    with pytest.raises(InvalidName, match=r"^invalid volume name 'a;b': character ';' not allowed"):
        validate_component("a;b", "volume name")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("pool/a@s1", True),
        ("pool@s1", True),
        ("pool/a@zflock-2024-01-01T00:00:00", True),
        ("pool/a@", False),
        ("@s1", False),
        ("pool/a@s@t", False),
        ("pool/a@-s", False),
        ("pool/a@s/t", False),
        ("pool/a#b@s", False),
        ("pool/a", False),
        ("pool/" + "a" * 250 + "@snap", False),
    ],
)
def test_snapshot_names(name: str, ok: bool) -> None:
    if ok:
        assert validate_snapshot_name(name) == name
        dataset, snap = split_snapshot_name(name)
        assert f"{dataset}@{snap}" == name
    else:
        with pytest.raises(InvalidName):
            validate_snapshot_name(name)


def test_bookmark_names() -> None:
    assert validate_bookmark_name("p/a#m1") == "p/a#m1"
    for bad in ("p/a", "p/a#", "p/a#m#n", "p/a@s#m"):
        with pytest.raises(InvalidName):
            validate_bookmark_name(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("tank", True),
        ("zt12x3", True),
        ("a.b:c-d_e", True),
        ("mirror", False),
        ("mirror2", False),
        ("raidz", False),
        ("raidz1x", False),
        ("draid", False),
        ("spare", False),
        ("spares", False),
        ("log", False),
        ("logs", True),
        ("c0t0d0", False),
        ("c", True),
        ("cat", True),
        ("1pool", False),
        ("_pool", False),
        ("-pool", False),
        ("po/ol", False),
        ("po ol", False),
        ("", False),
    ],
)
def test_pool_names(name: str, ok: bool) -> None:
    if ok:
        assert validate_pool_name(name) == name
    else:
        with pytest.raises(InvalidName):
            validate_pool_name(name)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("zflock:epoch", True),
        ("zflock:role", True),
        ("com.example:a-b_c.d", True),
        (":x", True),  # zfsprops(7) only requires a ':' somewhere
        ("zflock", False),
        ("Zflock:epoch", False),  # upper case is refused by ZFS
        ("zflock:ep och", False),
        ("zflock:e@x", False),
        ("-zflock:x", False),
        ("zflock:" + "x" * 249, False),
        ("", False),
    ],
)
def test_user_properties(name: str, ok: bool) -> None:
    if ok:
        assert validate_user_property(name) == name
        assert validate_property_name(name) == name
    else:
        with pytest.raises(InvalidName):
            validate_user_property(name)


def test_native_property_names() -> None:
    for good in ("quota", "readonly", "receive_resume_token", "userquota@bob"):
        assert validate_property_name(good) == good
    for bad in ("Quota", "-quota", "quo ta", "", "quota=1"):
        with pytest.raises(InvalidName):
            validate_property_name(bad)


def test_property_values_must_survive_tab_separated_output() -> None:
    assert validate_property_value("zflock:x", "a b-c") == "a b-c"
    for bad in ("a\tb", "a\nb", "a\0b"):
        with pytest.raises(InvalidName):
            validate_property_value("zflock:x", bad)


# -- property-based ----------------------------------------------------------

COMPONENT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
components = st.text(alphabet=COMPONENT_ALPHABET, min_size=1, max_size=40).filter(
    lambda c: c not in (".", "..") and not c.startswith("-")
)
pools = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("abdefghijkqtuvwxyzABCDEFZ"),  # avoids reserved prefixes and c[0-9]
    st.text(alphabet=COMPONENT_ALPHABET, max_size=20),
)
datasets = st.builds(lambda p, cs: "/".join([p, *cs]), pools, st.lists(components, max_size=5))


@given(datasets)
def test_generated_valid_datasets_pass(name: str) -> None:
    assert validate_dataset_name(name) == name


@given(datasets, components)
def test_generated_valid_snapshots_pass(dataset: str, snap: str) -> None:
    assert split_snapshot_name(f"{dataset}@{snap}") == (dataset, snap)


BAD_CHARS = st.sampled_from(list(" ;'\"$`\\|&<>()*?[]{}!~^%,=+\t\n\0é/@#"))


@given(datasets, BAD_CHARS, st.integers(min_value=0, max_value=10))
def test_bad_characters_fail(dataset: str, bad: str, at: int) -> None:
    base = dataset.split("/")[-1]
    at = min(at, len(base))
    comp = base[:at] + bad + base[at:]
    with pytest.raises(InvalidName):
        validate_component(comp)


@given(datasets, components)
def test_leading_dash_component_fails(dataset: str, comp: str) -> None:
    with pytest.raises(InvalidName, match="'-'"):
        validate_dataset_name(f"{dataset}/-{comp}")


@given(datasets, st.sampled_from([".", ".."]))
def test_dot_components_fail(dataset: str, dots: str) -> None:
    with pytest.raises(InvalidName):
        validate_dataset_name(f"{dataset}/{dots}")
    with pytest.raises(InvalidName):
        validate_dataset_name(f"{dataset}/{dots}/x")


@given(datasets)
def test_too_long_fails(dataset: str) -> None:
    long_name = dataset + "/" + "x" * max(1, 256 - len(dataset) - 1)
    assert len(long_name) >= 256
    with pytest.raises(InvalidName, match="longer than 255"):
        validate_dataset_name(long_name)


@given(st.text(max_size=30))
def test_validation_never_crashes(text: str) -> None:
    # Any string is either accepted unchanged or refused with InvalidName.
    for check in (validate_dataset_name, validate_snapshot_name, validate_pool_name):
        try:
            assert check(text) == text
        except InvalidName:
            pass
