"""Routing decisions recorded in batches (``record_routing_decisions``), on both backends."""

from __future__ import annotations

from storage import NewRoutingDecision
from storage._base import SqlStorage
from tests.storage.helpers import new_conversation


async def test_many_decisions_are_recorded_in_one_call_in_decision_order(
    storage: SqlStorage,
) -> None:
    ws, first = await new_conversation(storage, "mine")
    second = await storage.create_conversation(ws.id, visitor_id=first.visitor_id)
    other_ws, foreign = await new_conversation(storage, "theirs")
    decisions = [
        NewRoutingDecision(
            workspace_id=ws.id,
            conversation_id=first.id,
            agent_id=None,
            reason="no_agent_available",
            at=100.0,
        ),
        NewRoutingDecision(
            workspace_id=ws.id,
            conversation_id=second.id,
            agent_id="a1",
            reason="least_busy",
            details={"load": 0, "candidates": 2},
            at=101.0,
        ),
        NewRoutingDecision(
            workspace_id=ws.id, conversation_id=first.id, agent_id="a2", reason="sticky", at=102.0
        ),
        # Not written: a conversation of another workspace, and one that does not exist.
        NewRoutingDecision(
            workspace_id=ws.id, conversation_id=foreign.id, agent_id=None, reason="x", at=103.0
        ),
        NewRoutingDecision(
            workspace_id=ws.id, conversation_id="missing", agent_id=None, reason="x", at=104.0
        ),
    ]
    assert await storage.record_routing_decisions(decisions) == 3
    assert await storage.record_routing_decisions([]) == 0

    log = await storage.list_routing_decisions(ws.id)
    assert [(d.conversation_id, d.reason, d.agent_id, d.at) for d in log] == [
        (first.id, "sticky", "a2", 102.0),
        (second.id, "least_busy", "a1", 101.0),
        (first.id, "no_agent_available", None, 100.0),
    ]
    assert dict(log[1].details) == {"load": 0, "candidates": 2}
    assert len({d.id for d in log}) == 3
    assert await storage.list_routing_decisions(other_ws.id) == []
