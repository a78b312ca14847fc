"""What a conversation shows: event views, summaries, and its ephemeral pushes.

The conversation actor commits; this module turns its state into what connections receive:
``view``/``summarize`` (also used by the facade for history and lists), the replay after a
resume, typing signals and "agent is viewing" notices. Nothing here stores anything or blocks:
every push goes through ``Hub.deliver`` (``send_nowait``; the hub filters visitor pushes).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.context import EngineContext
from engine.messages import (
    ConversationSummary,
    EventPush,
    EventView,
    ResyncRequired,
    SetTyping,
    TypingPush,
    ViewingPush,
)
from engine.principals import AgentPrincipal, Connection, Principal, VisitorPrincipal
from storage import AuthorType, Conversation, Event, Visibility

__all__ = ["author_name", "replay", "summarize", "typing", "view", "viewing"]


def view(event: Event, author_name: str | None) -> EventView:
    return EventView(
        conversation_id=event.conversation_id,
        seq=event.seq,
        kind=str(event.kind),
        visibility=str(event.visibility),
        author_type=str(event.author_type),
        author_id=event.author_id,
        author_name=author_name,
        body=event.body,
        data=dict(event.data),
        client_msg_id=event.client_msg_id,
        created_at=event.created_at,
    )


def summarize(
    conv: Conversation,
    *,
    visitor_name: str | None = None,
    assignee_name: str | None = None,
    last_message: Event | None = None,
) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=conv.id,
        visitor_id=conv.visitor_id,
        visitor_name=visitor_name,
        state=str(conv.state),
        close_reason=None if conv.close_reason is None else str(conv.close_reason),
        group_id=conv.group_id,
        assignee_id=conv.assignee_id,
        assignee_name=assignee_name,
        participant_ids=tuple(conv.participant_ids),
        tags=tuple(conv.tags),
        last_seq=conv.last_seq,
        last_message_preview=None if last_message is None else (last_message.body or "")[:140],
        last_message_author_type=None if last_message is None else str(last_message.author_type),
        awaiting_agent=last_message is not None and last_message.author_type == AuthorType.VISITOR,
        created_at=conv.created_at,
        last_activity_at=conv.last_activity_at,
    )


async def author_name(ctx: EngineContext, event: Event) -> str | None:
    """The display name of an event's author (agents from the cache or storage)."""
    ws = event.workspace_id
    if event.author_type == AuthorType.AGENT and event.author_id:
        return await ctx.agent_name(ws, event.author_id)
    if event.author_type == AuthorType.VISITOR and event.author_id:
        return ctx.visitor_names.get((ws, event.author_id))
    sender = event.data.get("sender_name")  # a trigger's greeting (engine.greetings)
    return sender if isinstance(sender, str) else None


async def replay(
    ctx: EngineContext,
    conv: Conversation,
    recent: Sequence[Event],
    conn: Connection,
    after_seq: int | None,
) -> None:
    """Deliver the events after ``after_seq`` to ``conn`` (from ``recent`` when it reaches
    that far back, else from storage), or ``ResyncRequired`` when the gap would not fit."""
    if after_seq is None or after_seq >= conv.last_seq:
        return
    hub = ctx.hub
    for_visitor = isinstance(conn.principal, VisitorPrincipal)
    stats = conn.outbox.statistics()
    room = int(stats.max_buffer_size - stats.current_buffer_used) - 1
    gap = conv.last_seq - after_seq
    if gap > min(ctx.config.max_resume_gap, room):
        hub.deliver(
            conn,
            ResyncRequired(conversation_id=conv.id, from_seq=after_seq, last_seq=conv.last_seq),
        )
        return
    if recent and recent[0].seq <= after_seq + 1:
        events = [e for e in recent if e.seq > after_seq]
    else:
        events = await ctx.call(
            ctx.storage.history(
                conv.workspace_id,
                conv.id,
                after_seq=after_seq,
                limit=gap,
                include_agents_only=not for_visitor,
            )
        )
    for event in events:
        if for_visitor and event.visibility != Visibility.ALL:
            continue
        hub.deliver(conn, EventPush(event=view(event, await author_name(ctx, event))))


async def typing(ctx: EngineContext, conv: Conversation, who: Principal, cmd: SetTyping) -> None:
    """Fan a typing signal out: a visitor's to the chat's agents and watchers (with the draft
    when sneak peek is on), an agent's to the visitor and the other participants."""
    hub = ctx.hub
    ttl = ctx.config.typing_ttl_s
    ws = conv.workspace_id
    if isinstance(who, VisitorPrincipal):
        # Read per signal (a dict lookup): a settings change applies without a restart.
        settings = await ctx.workspace_settings(ws)
        draft = cmd.draft if settings.sneak_peek_enabled and cmd.is_typing else None
        push = TypingPush(
            conversation_id=conv.id,
            author_type="visitor",
            author_id=who.visitor_id,
            author_name=ctx.visitor_names.get((ws, who.visitor_id)),
            is_typing=cmd.is_typing,
            draft=draft,
            expires_in_s=ttl,
        )
        seen: set[str] = set()
        for agent_id in conv.participant_ids:
            for c in list(hub.agent_connections(ws, agent_id)):
                seen.add(c.id)
                hub.deliver(c, push)
        for c in list(hub.watchers(conv.id)):
            if c.id not in seen:
                hub.deliver(c, push)
        return
    assert isinstance(who, AgentPrincipal)
    if who.agent_id not in conv.participant_ids:
        return  # silent supervisors and onlookers never show as typing
    push = TypingPush(
        conversation_id=conv.id,
        author_type="agent",
        author_id=who.agent_id,
        author_name=who.display_name,
        is_typing=cmd.is_typing,
        draft=None,
        expires_in_s=ttl,
    )
    hub.deliver_all(hub.visitor_connections(ws, conv.visitor_id), push)
    for agent_id in conv.participant_ids:
        if agent_id != who.agent_id:
            hub.deliver_all(hub.agent_connections(ws, agent_id), push)


def viewing(ctx: EngineContext, conv: Conversation, conn: Connection, flag: bool) -> None:
    """Tell the visitor that a participant agent opened (or left) the chat; onlookers stay
    invisible."""
    who = conn.principal
    if not isinstance(who, AgentPrincipal) or who.agent_id not in conv.participant_ids:
        return
    hub = ctx.hub
    hub.deliver_all(
        hub.visitor_connections(conv.workspace_id, conv.visitor_id),
        ViewingPush(
            conversation_id=conv.id,
            agent_id=who.agent_id,
            agent_name=who.display_name,
            viewing=flag,
            expires_in_s=ctx.config.typing_ttl_s,
        ),
    )
