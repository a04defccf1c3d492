"""The layers of docs/design.md, enforced: each package of zflock imports only what it may.

Read with `ast` (nothing is imported), so a forbidden import fails here with
the file and line, instead of slowly eroding the design. The exceptions are
explained in docs/design.md ("Divergence" sections).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "zflock"

# What each layer may import from zflock, besides itself. Pure leaves first.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    # Typed events and the observer protocol: a pure leaf every layer may emit into.
    "events": set(),
    "units": {"errors"},
    "zfs": {"errors"},
    "cluster": {"errors", "zfs"},  # only zfs.names, to validate pool roots
    "replication": {"errors", "units", "cluster", "zfs"},
    "move": {"errors", "cluster", "zfs", "replication"},
    "rpc": {"errors", "units", "cluster", "zfs", "replication", "move"},
    "agent": {"errors", "units", "cluster", "zfs", "replication", "move", "rpc"},
    # The lab is a development tool beside the CLI: it starts agents as processes.
    "lab": {"errors", "units", "cluster", "zfs", "rpc"},
    "cli": {"errors", "units", "cluster", "zfs", "replication", "move", "rpc", "agent", "lab"},
}
for _layer in ALLOWED.keys() - {"errors", "events"}:
    ALLOWED[_layer].add("events")


def layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def zflock_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "zflock" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


SOURCES = sorted(p for p in ROOT.rglob("*.py") if layer_of(p) in ALLOWED)


def test_every_module_belongs_to_a_known_layer() -> None:
    top = {layer_of(p) for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert top <= set(ALLOWED), top - set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    layer = layer_of(path)
    bad = [
        f"{path.relative_to(ROOT.parent)}:{line} imports zflock.{target}"
        for line, target in zflock_imports(path)
        if target != layer and target not in ALLOWED[layer] and target not in {"__version__"}
    ]
    assert bad == [], f"layer {layer!r} may import only {sorted(ALLOWED[layer])}: {bad}"
