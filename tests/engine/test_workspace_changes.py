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
    GetRoutingLog,
    MessageAck,
    QueuePosition,
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
from tests.engine.conftest import Client, World, wait_until


async def _chat(world: World, visitor: Client, text: str = "hi", mid: str = "m1") -> str:
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id=mid, text=text))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _state(world: World, cid: str) -> tuple[ConversationState, str | None]:
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None
    return conv.state, conv.assignee_id


async def _until_state(
    world: World, cid: str, state: ConversationState, assignee_id: str | None = None
) -> None:
    """Wait (bounded) until the stored conversation is in ``state`` (and has that assignee)."""

    async def reached() -> bool:
        now, assignee = await _state(world, cid)
        return now == state and (assignee_id is None or assignee == assignee_id)

    await wait_until(reached, what=f"{cid} {state.value} {assignee_id or ''}")


class Pushes:
    """Everything pushed to a client, kept (``Client.drain`` consumes the inbox)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.all: list[Any] = []
        self.read = 0

    def update(self) -> list[Any]:
        self.all.extend(self.client.drain())
        return self.all

    def of(self, kind: type) -> list[Any]:
        return [p for p in self.update() if isinstance(p, kind)]

    def new(self) -> list[Any]:
        """Pushes since the previous ``new()``."""
        items = self.update()[self.read :]
        self.read = len(self.all)
        return items


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
        max_concurrent_chats=1000,  # the Workspace default
        workspace_name="Acme",  # a trigger greeting's default sender
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

    async def reasons() -> list[str]:
        log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=cid1))
        return [d.reason for d in log.decisions]

    await wait_until(reasons, what="a routing decision")  # the router has looked at it
    assert await reasons() == ["manual_mode"]
    assert await _state(world, cid1) == (ConversationState.QUEUED, None)

    await _set(world, routing={"mode": "auto"})
    await _until_state(world, cid1, ConversationState.ACTIVE, ann.conn.principal.agent_id)


async def test_sneak_peek_toggle_reaches_a_running_conversation(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _until_state(world, cid, ConversationState.ACTIVE, ann.conn.principal.agent_id)
    ann_pushes = Pushes(ann)
    ann_pushes.new()

    async def draft_seen(text: str) -> str | None:
        # Three signals fit the typing rate limit's burst: none of them is dropped.
        await world.engine.request(
            v.conn, SetTyping(conversation_id=cid, is_typing=True, draft=text)
        )
        typing: list[TypingPush] = []

        def arrived() -> bool:
            typing.extend(p for p in ann_pushes.new() if isinstance(p, TypingPush))
            return bool(typing)

        await wait_until(arrived, what="the agent gets the typing signal either way")
        assert len(typing) == 1
        return typing[0].draft

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
    await _until_state(world, cid, ConversationState.CLOSED)
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.close_reason is not None
    assert conv.close_reason.value == "missed"
    # Closed no earlier than abandon_queued_after_s after it was queued, whatever the load.
    assert conv.closed_at is not None and conv.closed_at - conv.created_at >= 0.5
    pushes = Pushes(v)

    def told_closed() -> bool:
        # The visitor learns the chat closed; why (``missed``) is the workspace's to know
        # (engine/visibility.py keeps a status event's ``reason`` from visitors).
        return any(
            e.kind == "status" and e.data == {"state": "closed"}
            for e in v.events(pushes.update())
        )

    await wait_until(told_closed, what="the visitor is told the chat closed")


@pytest.mark.parametrize(("sticky", "reason"), [(True, "sticky"), (False, "least_busy")])
async def test_sticky_agent_setting_decides_the_reopened_chat(
    world: World, sticky: bool, reason: str
) -> None:
    await _set(world, routing={"sticky_agent": sticky})
    ann = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _until_state(world, cid, ConversationState.ACTIVE, ann.conn.principal.agent_id)
    await world.engine.request(ann.conn, Close(conversation_id=cid))
    ann.drain()
    await world.engine.request(
        v.conn, SendMessage(conversation_id=cid, client_msg_id="m2", text="again")
    )
    pushes = Pushes(ann)
    await wait_until(lambda: pushes.of(ChatAssigned), what="the reopened chat is assigned")
    assert [p.reason for p in pushes.of(ChatAssigned)] == [reason]


async def test_new_chats_get_the_default_group(world: World) -> None:
    group = await world.storage.create_group(world.workspace_id, name="Sales")
    await world.connect(await world.agent("ann", group_ids=(group.id,)))
    await _set(world, routing={"default_group_id": group.id})
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _until_state(world, cid, ConversationState.ACTIVE)  # the group's agent took it
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.group_id == group.id


async def test_agent_changes_apply_without_restart(world: World) -> None:
    ann_p = await world.agent("ann", max_chats=1)
    ann = await world.connect(ann_p)
    visitors = [await world.connect(await world.visitor()) for _ in range(2)]
    cids = [await _chat(world, v) for v in visitors]
    await _until_state(world, cids[0], ConversationState.ACTIVE, ann_p.agent_id)
    # Routing has passed over the second chat once its visitor is told a queue position.
    second_pushes = Pushes(visitors[1])
    await wait_until(lambda: second_pushes.of(QueuePosition), what="a queue position")
    assert await _state(world, cids[1]) == (ConversationState.QUEUED, None)

    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, max_chats=2)
    await world.engine.workspace_changed(world.workspace_id)
    await _until_state(world, cids[1], ConversationState.ACTIVE, ann_p.agent_id)

    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, enabled=False)
    await world.engine.workspace_changed(world.workspace_id)
    for cid in cids:  # a disabled agent's chats go back to the queue
        await _until_state(world, cid, ConversationState.QUEUED)
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
    cid = await _chat(world, v)
    await _until_state(world, cid, ConversationState.ACTIVE, ann.conn.principal.agent_id)
    # at her chat limit: still available, the next chat queues instead of going offline
    assert await world.engine.agents_available(ws) is True
    # The status change is applied by the router before the request returns.
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    assert await world.engine.agents_available(ws) is False
    await world.engine.disconnect(ann.conn)


def _availability(client: Client) -> list[bool]:
    return [p.agents_available for p in client.drain() if isinstance(p, Availability)]


async def _flips(client: Client, expected: list[bool]) -> None:
    """Wait until ``client`` got exactly ``expected`` availability pushes (no more, no less:
    pushes arrive in the router's order, so an extra one would come before the last)."""
    got: list[bool] = []

    def enough() -> bool:
        got.extend(_availability(client))
        return len(got) >= len(expected)

    await wait_until(enough, what=f"availability pushes {expected}")
    assert got == expected


async def test_open_visitors_are_told_when_availability_flips(world: World) -> None:
    v = await world.connect(await world.visitor())  # the router starts with nobody online
    assert isinstance(v.conn.welcome, VisitorWelcome)
    assert v.conn.welcome.agents_available is False
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)  # connects accepting
    await _flips(v, [True])

    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await _flips(v, [False])

    bob = await world.connect(await world.agent("bob"))
    await world.engine.request(bob.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))
    # bob's connect flipped it on and off; ann accepting again flips it on
    await _flips(v, [True, False, True])
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))

    late = await world.connect(await world.visitor())
    assert isinstance(late.conn.welcome, VisitorWelcome)
    assert late.conn.welcome.agents_available is True
    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, enabled=False)
    await world.engine.workspace_changed(world.workspace_id)
    # Exactly one push: ann accepting again (before) was no flip, so it sent none.
    await _flips(v, [False])
    await _flips(late, [False])
    assert _availability(ann) == []  # agents are not sent it (the visitors' push came first)


async def test_request_as_acts_without_a_connection(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    admin = await world.agent("root", role=Role.ADMIN)  # acts over HTTP: never connected
    bystander = await world.agent("bystander")
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _until_state(world, cid, ConversationState.ACTIVE, ann.conn.principal.agent_id)
    ann.drain()
    with pytest.raises(Forbidden):  # same rules as on a socket: not in this chat
        await world.engine.request_as(bystander, Close(conversation_id=cid))
    await world.engine.request_as(admin, Tag(conversation_id=cid, add=("vip",)))
    await world.engine.request_as(admin, Close(conversation_id=cid))
    kinds: list[str] = []

    def told() -> bool:  # participants are told
        kinds.extend(e.kind for e in ann.events())
        return "tagged" in kinds and "status" in kinds

    await wait_until(told, what="ann told of the tag and the close")
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
    for cid in ("c_guessed", foreign.id):  # two signals: within the typing burst, not dropped
        # The id is checked inside the request, before any actor could start.
        await world.engine.request(mallory.conn, SetTyping(conversation_id=cid, is_typing=True))
        assert registry.count == before
    with pytest.raises(NotFound):
        await world.engine.request(
            mallory.conn, SendMessage(conversation_id=foreign.id, client_msg_id="x", text="hi")
        )
    assert registry.count == before
