"""The CLI imports only the module of the command it runs, and knows every command's module."""

from __future__ import annotations

import subprocess
import sys

from zflock.cli.app import COMMANDS, _register, app


def test_every_command_is_in_the_table() -> None:
    _register()
    assert set(app.commands) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert app.commands[name].callback is not None
        assert app.commands[name].callback.__module__ == f"zflock.cli.{module}", name


def test_ls_does_not_import_the_agent_or_the_lab() -> None:
    probe = (
        "import sys\n"
        "from zflock.cli.app import app\n"
        "app(['ls', '--help'], standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('zflock.agent', 'zflock.lab', "
        "'zflock.cli.'))))\n"
    )
    loaded = run_probe(probe).strip().splitlines()[-1]
    assert "zflock.cli.volumes" in loaded
    for heavy in ("zflock.agent", "zflock.lab", "zflock.cli.lab", "zflock.cli.failover"):
        assert f"'{heavy}" not in loaded, loaded


def test_the_agent_command_does_not_load_rich() -> None:
    """rich is the CLI's, for tables and progress: ~2 MB of an agent's idle RSS, whose
    target (< 60 MB at 1000 volumes) it would otherwise eat."""
    probe = (
        "import sys\n"
        "from zflock.cli.app import app\n"
        "app(['agent', '--help'], standalone_mode=False)\n"
        "import zflock.agent.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))\n"
    )
    assert run_probe(probe).strip().splitlines()[-1] == "[]"


def test_the_zfs_package_loads_its_modules_on_first_use() -> None:
    probe = (
        "import sys\n"
        "import zflock.zfs as z\n"
        "from zflock.zfs.names import validate_component\n"
        "print('zflock.zfs.client' in sys.modules)\n"
        "assert set(z._EXPORTS) == set(z.__all__), set(z._EXPORTS) ^ set(z.__all__)\n"
        "print(all(getattr(z, n) is getattr(sys.modules[m], n) for n, m in z._EXPORTS.items()))\n"
        "print('zflock.zfs.client' in sys.modules)\n"
    )
    assert run_probe(probe).split() == ["False", "True", "True"]


def run_probe(code: str) -> str:
    """What `code` prints in a fresh interpreter (nothing imported beforehand)."""
    return subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True
    ).stdout
