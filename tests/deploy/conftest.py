"""The deploy tier (tests/deploy): the Ansible role on three systemd containers.

Not part of the default `pytest` run: it needs docker.io, mmdebstrap and the
deploy requirements (ansible, ansible-lint), which `tests/deploy/ci-step.sh`
installs. That script sets ZFLOCK_DEPLOY_TIER=1; without it nothing here is
collected.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("ZFLOCK_DEPLOY_TIER") == "1" else ["test_*.py"]
