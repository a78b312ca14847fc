"""Workspace settings in the layout the admin API stores, applied without a restart
(``ChatEngine.workspace_changed``), and the facade calls the web layer makes without a socket."""

from __future__ import annotations

from typing import Any

import pytest

from engine.api import EngineConfig
from engine.context import WorkspaceSettings
from engine.errors import Forbidden, NotFound
from engine.messages import (
    AgentWelcome,
    Availability,
    ChatAssigned,
    Close,
    ConversationUpdate,
    GetRoutingLog,
    MessageAck,
    SendMessage,
    SetStatus,
    SettableStatus,
    SetTyping,
    Tag,
    TypingPush,
    VisitorWelcome,
    Watch,
)
from storage.api import ConversationState, Role, Workspace
from tests.engine.conftest import Client, World, settle


async def _chat(world: World, visitor: Client, text: str = "hi", mid: str = "m1") -> str:
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id=mid, text=text))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _set(world: World, **sections: dict[str, Any]) -> None:
    """Store settings the way PUT /settings/{widget,routing} does, then tell the engine."""
    ws = await world.storage.get_workspace(world.workspace_id)
    assert ws is not None
    await world.storage.update_workspace(world.workspace_id, settings={**ws.settings, **sections})
    await world.engine.workspace_changed(world.workspace_id)


def test_settings_are_read_from_the_admin_api_layout() -> None:
    ws = Workspace(
        id="w",
        name="Acme",
        widget_key="k",
        identity_secret="s",
        settings={
            "widget": {"sneak_peek": True, "color": "#000000"},
            "routing": {
                "mode": "manual",
                "agent_response_timeout_s": 42,
                "abandon_queued_after_s": 90,
                "sticky_agent": False,
                "default_group_id": "g1",
            },
        },
    )
    got = WorkspaceSettings.from_workspace(ws, EngineConfig())
    assert got == WorkspaceSettings(
        routing_mode="manual",
        sneak_peek_enabled=True,
        agent_response_timeout_s=42.0,
        abandon_queued_after_s=90.0,
        sticky_agent=False,
        default_group_id="g1",
    )
    defaults = WorkspaceSettings.from_workspace(None, EngineConfig(abandon_queued_after_s=5))
    assert (defaults.routing_mode, defaults.sneak_peek_enabled, defaults.sticky_agent) == (
        "auto",
        False,
        True,
    )
    assert (defaults.abandon_queued_after_s, defaults.default_group_id) == (5.0, None)


async def test_routing_mode_change_applies_without_restart(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    await _set(world, routing={"mode": "manual"})
    v1 = await world.connect(await world.visitor())
    cid1 = await _chat(world, v1)
    await settle(0.3)
    conv = await world.storage.get_conversation(world.workspace_id, cid1)
    assert conv is not None and conv.state == ConversationState.QUEUED
    log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=cid1))
    assert [d.reason for d in log.decisions] == ["manual_mode"]

    await _set(world, routing={"mode": "auto"})
    await settle(0.3)
    conv = await world.storage.get_conversation(world.workspace_id, cid1)
    assert conv is not None and conv.assignee_id == ann.conn.principal.agent_id


async def test_sneak_peek_toggle_reaches_a_running_conversation(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await settle(0.3)
    ann.drain()

    async def draft_seen(text: str) -> str | None:
        await world.engine.request(
            v.conn, SetTyping(conversation_id=cid, is_typing=True, draft=text)
        )
        await settle(0.4)  # also past the typing rate limit
        typing = [p for p in ann.drain() if isinstance(p, TypingPush)]
        assert typing, "the agent gets the typing signal either way"
        return typing[-1].draft

    assert await draft_seen("before") is None
    await _set(world, widget={"sneak_peek": True})
    assert await draft_seen("my order number is 12") == "my order number is 12"
    await _set(world, widget={"sneak_peek": False})
    assert await draft_seen("after") is None


@pytest.mark.parametrize("engine_config", [{"tick_interval_s": 0.1}])
async def test_a_chat_queued_past_abandon_queued_after_is_closed_as_missed(world: World) -> None:
    await _set(world, routing={"abandon_queued_after_s": 0.5})
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)  # nobody is online: it stays queued
    await settle(0.2)
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.state == ConversationState.QUEUED
    await settle(0.8)
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.state == ConversationState.CLOSED
    assert conv.close_reason is not None and conv.close_reason.value == "missed"
    updates = [p for p in v.drain() if isinstance(p, ConversationUpdate)]
    assert updates == [] or updates[-1].conversation.state == "closed"


@pytest.mark.parametrize(("sticky", "reason"), [(True, "sticky"), (False, "least_busy")])
async def test_sticky_agent_setting_decides_the_reopened_chat(
    world: World, sticky: bool, reason: str
) -> None:
    await _set(world, routing={"sticky_agent": sticky})
    ann = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await settle(0.3)
    await world.engine.request(ann.conn, Close(conversation_id=cid))
    ann.drain()
    await world.engine.request(
        v.conn, SendMessage(conversation_id=cid, client_msg_id="m2", text="again")
    )
    await settle(0.3)
    assigned = [p for p in ann.drain() if isinstance(p, ChatAssigned)]
    assert [p.reason for p in assigned] == [reason]


async def test_new_chats_get_the_default_group(world: World) -> None:
    group = await world.storage.create_group(world.workspace_id, name="Sales")
    await world.connect(await world.agent("ann", group_ids=(group.id,)))
    await _set(world, routing={"default_group_id": group.id})
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await settle(0.3)
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.group_id == group.id
    assert conv.state == ConversationState.ACTIVE  # the group's agent took it


async def test_agent_changes_apply_without_restart(world: World) -> None:
    ann_p = await world.agent("ann", max_chats=1)
    ann = await world.connect(ann_p)
    visitors = [await world.connect(await world.visitor()) for _ in range(2)]
    cids = [await _chat(world, v) for v in visitors]
    await settle(0.3)
    second = await world.storage.get_conversation(world.workspace_id, cids[1])
    assert second is not None and second.state == ConversationState.QUEUED

    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, max_chats=2)
    await world.engine.workspace_changed(world.workspace_id)
    await settle(0.3)
    second = await world.storage.get_conversation(world.workspace_id, cids[1])
    assert second is not None and second.assignee_id == ann_p.agent_id

    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, enabled=False)
    await world.engine.workspace_changed(world.workspace_id)
    await settle(0.3)
    for cid in cids:  # a disabled agent's chats go back to the queue
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        assert conv is not None and conv.state == ConversationState.QUEUED
    bob = await world.connect(await world.agent("bob"))
    assert isinstance(bob.conn.welcome, AgentWelcome)
    assert ann_p.agent_id not in {a.agent_id for a in bob.conn.welcome.agents}
    del ann


async def test_agent_welcome_lists_every_enabled_agent_with_live_status(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))  # the router starts here
    carl = await world.agent("carl")  # created afterwards, never connected
    bob = await world.connect(await world.agent("bob"))
    assert isinstance(bob.conn.welcome, AgentWelcome)
    statuses = {a.agent_id: a.status for a in bob.conn.welcome.agents}
    assert statuses == {
        ann.conn.principal.agent_id: "accepting",
        carl.agent_id: "offline",
        bob.conn.principal.agent_id: "accepting",
    }


async def test_agents_available_means_accepting_even_when_busy(world: World) -> None:
    ws = world.workspace_id
    assert await world.engine.agents_available(ws) is False
    ann = await world.connect(await world.agent("ann", max_chats=1))
    assert await world.engine.agents_available(ws) is True
    v = await world.connect(await world.visitor())
    await _chat(world, v)
    await settle(0.3)
    # at her chat limit: still available, the next chat queues instead of going offline
    assert await world.engine.agents_available(ws) is True
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await settle(0.3)
    assert await world.engine.agents_available(ws) is False
    await world.engine.disconnect(ann.conn)


def _availability(client: Client) -> list[bool]:
    return [p.agents_available for p in client.drain() if isinstance(p, Availability)]


async def test_open_visitors_are_told_when_availability_flips(world: World) -> None:
    v = await world.connect(await world.visitor())  # the router starts with nobody online
    assert isinstance(v.conn.welcome, VisitorWelcome)
    assert v.conn.welcome.agents_available is False
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)  # connects accepting
    await settle(0.3)
    assert _availability(v) == [True]

    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await settle(0.3)
    assert _availability(v) == [False]

    bob = await world.connect(await world.agent("bob"))
    await world.engine.request(bob.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))
    await settle(0.3)
    # bob's connect flipped it on and off; ann accepting again flips it on
    assert _availability(v) == [True, False, True]
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))
    await settle(0.3)
    assert _availability(v) == []  # no flip, no push

    late = await world.connect(await world.visitor())
    assert isinstance(late.conn.welcome, VisitorWelcome)
    assert late.conn.welcome.agents_available is True
    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, enabled=False)
    await world.engine.workspace_changed(world.workspace_id)
    await settle(0.3)
    assert _availability(v) == [False]
    assert _availability(late) == [False]
    assert _availability(ann) == []  # agents are not sent it


async def test_request_as_acts_without_a_connection(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    admin = await world.agent("root", role=Role.ADMIN)  # acts over HTTP: never connected
    bystander = await world.agent("bystander")
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await settle(0.3)
    ann.drain()
    with pytest.raises(Forbidden):  # same rules as on a socket: not in this chat
        await world.engine.request_as(bystander, Close(conversation_id=cid))
    await world.engine.request_as(admin, Tag(conversation_id=cid, add=("vip",)))
    await world.engine.request_as(admin, Close(conversation_id=cid))
    await settle(0.1)
    kinds = [e.kind for e in ann.events()]
    assert "tagged" in kinds and "status" in kinds  # participants are told
    assert not world.engine.hub.agent_online(world.workspace_id, admin.agent_id)
    with pytest.raises(Forbidden):
        await world.engine.request_as(admin, Watch(conversation_id=cid, after_seq=0))


async def test_typing_to_a_guessed_or_foreign_id_starts_no_actor(world: World) -> None:
    registry = world.engine._ctx.conversations
    assert registry is not None
    mallory = await world.connect(await world.visitor())
    other = await world.visitor()
    foreign = await world.storage.create_conversation(
        world.workspace_id, visitor_id=other.visitor_id
    )
    before = registry.count
    for cid in ("c_guessed", foreign.id):
        await world.engine.request(mallory.conn, SetTyping(conversation_id=cid, is_typing=True))
        await settle(0.35)
    assert registry.count == before
    with pytest.raises(NotFound):
        await world.engine.request(
            mallory.conn, SendMessage(conversation_id=foreign.id, client_msg_id="x", text="hi")
        )
    assert registry.count == before
