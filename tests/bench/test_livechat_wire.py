"""How ``prepare`` lays pairs out over agents, workspaces and load-generator processes."""

from __future__ import annotations

import pytest

from bench.livechat_wire import agents_for


@pytest.mark.parametrize(
    ("pairs", "chats_per_agent", "processes", "workspaces"),
    [(100, 2, 1, 1), (100, 2, 1, 2), (20, 10, 1, 3), (7, 2, 2, 3), (5, 10, 4, 2)],
)
def test_a_pair_its_agent_and_its_loadgen_child_agree(
    pairs: int, chats_per_agent: int, processes: int, workspaces: int
) -> None:
    agents = agents_for(pairs, chats_per_agent, processes, workspaces)

    assert agents * chats_per_agent >= pairs
    for i in range(pairs):
        agent = i % agents
        # the agent (workspace agent % W) is in the pair's own workspace (i % W)
        assert agent % workspaces == i % workspaces
        # and every pair of that agent runs in the same load-generator child
        assert all(j % processes == i % processes for j in range(agent, pairs, agents))


def test_one_workspace_keeps_todays_agent_count() -> None:
    assert agents_for(100, 2, 1) == agents_for(100, 2, 1, workspaces=1) == 50
    assert agents_for(100, 3, 4) == 36
