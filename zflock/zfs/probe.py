"""What the running ZFS supports, decided from evidence.

Every answer comes from a cheap command that cannot change anything: an
option or property is "supported" when the command parser accepts it and
fails only later, on a dataset that does not exist (PROBE_TARGET). The
commands and how each answer is decided:

- implementation: `zfs version` exits 0 -> "openzfs" (version from its
  output), otherwise "zfs-fuse" (which has no `version` command);
- createtxg: `zfs get createtxg T` does not say "invalid property";
- list_parsable: `zfs list -H -p T` does not say "invalid option";
- receive_unmounted: `zfs receive -u T` (empty stdin) does not say "invalid option";
- send_estimates: `zfs send -n -P T@x` does not say "invalid option";
- bookmarks: `zfs bookmark T@x T#x` does not say "unrecognized command"
  (OpenZFS 2.1 prints its usage after "source ... does not exist", so
  "does not exist" counts as accepted here);
- holds: `zfs holds T@x` fails only because T@x "does not exist" (*);
- resume_tokens: `zfs get receive_resume_token T`, `zfs receive -s T` and
  `zfs send -t TOKEN` are all accepted.

(*) zfs-fuse lists `hold` in its usage and even takes a hold, but `zfs holds`
fails ("internal error: /usr/lib/zfs/pyzfs.py not found") and a second tag is
lost, so holds count as supported only when listing them works.

`zfs version` exists from OpenZFS 0.8 on; older OpenZFS is not supported.
On the development machines zfs-fuse answers createtxg=True and
receive_unmounted=True (both verified by the contract tests), unlike what
LAB.md says.
"""

from __future__ import annotations

import asyncio

from zflock.zfs.parse import parse_version
from zflock.zfs.runner import Completed, Runner
from zflock.zfs.types import Capabilities

PROBE_TARGET = "zflock-probe-nonexistent/probe"

# name -> argv; each must fail harmlessly (or succeed without side effects).
PROBE_COMMANDS: dict[str, tuple[str, ...]] = {
    "version": ("zfs", "version"),
    "createtxg": ("zfs", "get", "-H", "-o", "value", "createtxg", PROBE_TARGET),
    "resume_token_property": (
        "zfs",
        "get",
        "-H",
        "-o",
        "value",
        "receive_resume_token",
        PROBE_TARGET,
    ),
    "list_parsable": ("zfs", "list", "-H", "-p", "-o", "name", PROBE_TARGET),
    "receive_unmounted": ("zfs", "receive", "-u", PROBE_TARGET),
    "receive_resumable": ("zfs", "receive", "-s", PROBE_TARGET),
    "send_resume": ("zfs", "send", "-t", "zflock-probe-token"),
    "send_estimates": ("zfs", "send", "-n", "-P", f"{PROBE_TARGET}@x"),
    "bookmarks": ("zfs", "bookmark", f"{PROBE_TARGET}@x", f"{PROBE_TARGET}#x"),
    "holds": ("zfs", "holds", f"{PROBE_TARGET}@x"),
}


def _accepted(done: Completed) -> bool:
    """The command parser accepted the option/property/command."""
    err = done.stderr_text.lower()
    return not any(
        needle in err
        for needle in ("invalid option", "invalid property", "unrecognized command", "usage:")
    )


def _bookmarks(done: Completed) -> bool:
    err = done.stderr_text.lower()
    if "unrecognized command" in err:
        return False
    return _accepted(done) or "does not exist" in err


def decide_capabilities(results: dict[str, Completed]) -> Capabilities:
    """Pure: the Capabilities that the probe commands' results show."""
    version_done = results["version"]
    openzfs = version_done.returncode == 0
    holds_done = results["holds"]
    holds_err = holds_done.stderr_text.lower()
    holds = holds_done.returncode == 0 or ("does not exist" in holds_err and _accepted(holds_done))
    return Capabilities(
        implementation="openzfs" if openzfs else "zfs-fuse",
        version=parse_version(version_done.stdout_text) if openzfs else None,
        resume_tokens=all(
            _accepted(results[k])
            for k in ("resume_token_property", "receive_resumable", "send_resume")
        ),
        receive_unmounted=_accepted(results["receive_unmounted"]),
        holds=holds,
        bookmarks=_bookmarks(results["bookmarks"]),
        send_estimates=_accepted(results["send_estimates"]),
        createtxg=_accepted(results["createtxg"]),
        list_parsable=_accepted(results["list_parsable"]),
        # Not something an option parser shows: known of the implementation
        # (tests/zfs/test_contract.py checks it on both).
        readonly_fences_open_files=openzfs,
    )


async def probe_capabilities(runner: Runner) -> Capabilities:
    """Run the probe commands concurrently and decide."""
    names = list(PROBE_COMMANDS)
    # stdin is /dev/null (input=None): `zfs receive` then fails reading an
    # empty stream, after its option parser has had its say.
    done = await asyncio.gather(*(runner.run(PROBE_COMMANDS[n], check=False) for n in names))
    return decide_capabilities(dict(zip(names, done, strict=True)))
