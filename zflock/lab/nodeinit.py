"""Entry point run inside a fresh private mount namespace.

Usage (argv only, never a shell):
    unshare -m --propagation private -- python -m zflock.lab.nodeinit \
        --bind SRC:DST [--bind SRC:DST ...] -- PROGRAM [ARGS...]

It bind-mounts each SRC over DST (creating DST if needed) and then execs
PROGRAM, so the PID the caller recorded is PROGRAM's PID. Because the mount
namespace is private, the binds are seen only by PROGRAM and by whatever later
enters this namespace (nsenter --mount=/proc/PID/ns/mnt).
"""

from __future__ import annotations

import os
import subprocess
import sys


def _parse(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    binds: list[tuple[str, str]] = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] != "--bind" or i + 1 >= len(argv) or ":" not in argv[i + 1]:
            raise SystemExit(f"nodeinit: bad argument {argv[i]!r}; expected --bind SRC:DST")
        src, dst = argv[i + 1].split(":", 1)
        binds.append((src, dst))
        i += 2
    program = argv[i + 1 :]
    if not program:
        raise SystemExit("nodeinit: no program given after --")
    return binds, program


def main(argv: list[str] | None = None) -> None:
    binds, program = _parse(sys.argv[1:] if argv is None else argv)
    for src, dst in binds:
        os.makedirs(src, exist_ok=True)
        os.makedirs(dst, exist_ok=True)
        subprocess.run(["mount", "--bind", src, dst], check=True)
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
