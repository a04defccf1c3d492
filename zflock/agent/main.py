"""`zflock agent`: load the node file, check the node, serve until stopped.

Exit codes (the systemd unit relies on them): 0 after a clean stop,
1 when the node is not usable yet (missing pool root, key, busy port:
systemd retries), 2 when the configuration itself is wrong (retrying
cannot help; the unit's RestartPreventExitStatus=2 stops the loop).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from zflock.agent.logs import setup_logging
from zflock.agent.server import Agent
from zflock.cluster.config import load_agent_config
from zflock.errors import UsageError, ZflockError
from zflock.replication.policy import defaults_from_config

log = logging.getLogger("zflock.agent")


def run_agent(config_path: Path, *, debug: bool = False) -> int:
    setup_logging(logging.DEBUG if debug else logging.INFO)
    try:
        config = load_agent_config(config_path)
        defaults_from_config(config)  # [replication]: its grammars live in replication/
    except UsageError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        asyncio.run(Agent(config).run())
    except ZflockError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0
