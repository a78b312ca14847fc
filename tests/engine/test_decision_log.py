"""Routing decisions are stored in batches, off the assignment path, and none is lost."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from engine.api import AgentPrincipal, ChatEngine, EngineConfig, VisitorPrincipal
from engine.messages import ChatAssigned, GetRoutingLog, MessageAck, Push, SendMessage
from storage import NewRoutingDecision, open_storage
from storage.api import Role
from tests.engine.conftest import wait_until


class SlowDecisions:
    """Storage whose routing-decision writes wait until ``release`` is set (a busy writer)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.release = trio.Event()
        self.single_writes = 0
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def record_routing_decision(self, *args: Any, **kwargs: Any) -> None:
        self.single_writes += 1
        await self.release.wait()
        await self._inner.record_routing_decision(*args, **kwargs)

    async def record_routing_decisions(self, decisions: Sequence[NewRoutingDecision]) -> int:
        await self.release.wait()
        self.batches.append(len(decisions))
        return int(await self._inner.record_routing_decisions(decisions))


async def _setup(storage: Any) -> tuple[str, AgentPrincipal, list[VisitorPrincipal]]:
    ws = await storage.create_workspace(name="Acme")
    agent = await storage.create_agent(
        ws.id, username="ann", display_name="Ann", password_hash=None, max_chats=50
    )
    principal = AgentPrincipal(
        workspace_id=ws.id, agent_id=agent.id, role=Role.AGENT, display_name="Ann"
    )
    visitors = []
    for _ in range(5):
        v = await storage.create_visitor(ws.id, token_hash=None)
        visitors.append(VisitorPrincipal(workspace_id=ws.id, visitor_id=v.id))
    return ws.id, principal, visitors


async def test_assignments_do_not_wait_for_the_decision_log_and_none_is_lost(
    tmp_path: Path,
) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'e.db'}") as real:
        storage = SlowDecisions(real)
        ws, agent, visitors = await _setup(real)
        engine = ChatEngine(storage, EngineConfig(tick_interval_s=0.2))  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            send, inbox = trio.open_memory_channel[Push](1000)
            ann = await engine.connect(agent, send, connection_id="a")
            conversations = []
            for i, principal in enumerate(visitors):
                vsend, _vrecv = trio.open_memory_channel[Push](1000)
                conn = await engine.connect(principal, vsend, connection_id=f"v{i}")
                ack = await engine.request(conn, SendMessage(client_msg_id="m", text="hi"))
                assert isinstance(ack, MessageAck)
                conversations.append(ack.conversation_id)
            # Every chat reaches Ann while the decision log cannot write at all.
            assigned: set[str] = set()
            with trio.fail_after(5):
                async for push in inbox:
                    if isinstance(push, ChatAssigned):
                        assigned.add(push.conversation.conversation_id)
                        if assigned == set(conversations):
                            break
            assert storage.single_writes == 0
            assert storage.batches == []

            storage.release.set()
            await engine.shutdown(deadline_s=5)
            nursery.cancel_scope.cancel()
        assert sum(storage.batches) == len(conversations)  # one per assignment
        assert len(storage.batches) < len(conversations)  # written together
        for cid in conversations:
            log = await real.list_routing_decisions(ws, conversation_id=cid)
            assert [(d.reason, d.agent_id) for d in log] == [("least_busy", agent.agent_id)]
        del ann


async def test_reading_the_routing_log_sees_the_decisions_made_so_far(tmp_path: Path) -> None:
    async with open_storage(f"sqlite:///{tmp_path / 'e.db'}") as storage:
        ws, agent, visitors = await _setup(storage)
        engine = ChatEngine(storage, EngineConfig())
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            send, _inbox = trio.open_memory_channel[Push](1000)
            ann = await engine.connect(agent, send, connection_id="a")
            vsend, _vrecv = trio.open_memory_channel[Push](1000)
            vis = await engine.connect(visitors[0], vsend, connection_id="v")
            ack = await engine.request(vis, SendMessage(client_msg_id="m", text="hi"))
            assert isinstance(ack, MessageAck)

            async def assigned() -> bool:  # until the assignment is durable
                conv = await storage.get_conversation(ws, ack.conversation_id)
                return conv is not None and conv.assignee_id is not None

            await wait_until(assigned, what="the assignment is stored")
            log = await engine.request(ann, GetRoutingLog(conversation_id=ack.conversation_id))
            assert [d.reason for d in log.decisions] == ["least_busy"]
            await engine.shutdown(deadline_s=5)
            nursery.cancel_scope.cancel()
