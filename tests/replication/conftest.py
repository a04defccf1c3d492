"""A 3-node lab with agents for the replication tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agentlab import AgentLab, agent_lab_session


@pytest.fixture(scope="module")
def agent_lab() -> Iterator[AgentLab]:
    with agent_lab_session(nodes=3, pool_size=3 << 30) as lab:
        yield lab
