"""A workspace's queue as the router keeps it, and who gets a queued chat (``RouterActor``).

Rules (auto mode), in ``choose_agent``: sticky return to the previous agent if they can take it
(unless the workspace turned ``sticky_agent`` off); a returning visitor's new chat to the agent
of their last chat if that agent can take it in the chat's group (``sticky_new_chats``);
otherwise the least-busy eligible agent of the chat's group (ties: longest idle), then the
group's fallback chain. Bots (docs/bots.md) take new chats first; a chat that has been with
anyone before (transferred, reopened, requeued) goes to humans only, so a bot's handover sticks.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine.agent import AgentState
from engine.messages import QueueEntry, QueuePosition
from engine.presence import Hub

BOT_ROLE = "bot"  # storage.Role.BOT


@attrs.define(slots=True, kw_only=True, eq=False)
class Queued:
    """One queued chat, as the router tracks it between its arrival and its assignment."""

    conversation_id: str
    visitor_id: str
    group_id: str | None
    queued_at: float
    previous_assignee_id: str | None
    preview: str | None = None
    excluded: set[str] = attrs.field(factory=set)
    proposed_to: str | None = None
    logged: bool = False
    position_sent: int = 0
    abandoning: bool = False  # told the conversation to close as missed
    returning_to: str | None = None  # agent of the visitor's last chat (``sticky_new_chats``)
    fired: set[str] = attrs.field(factory=set)  # triggers fired for this chat

    def sort_key(self) -> tuple[float, str]:
        return (self.queued_at, self.conversation_id)


def choose_agent(
    item: Queued,
    agents: dict[str, AgentState],
    fallback: dict[str, str | None],
    *,
    sticky_agent: bool,
    sticky_new_chats: bool,
) -> tuple[AgentState | None, str, dict[str, Any]]:
    """The agent to offer ``item`` to, the reason and its details; ``(None, "", {})`` when
    nobody can take it now."""
    prev = agents.get(item.previous_assignee_id or "")
    if (
        sticky_agent
        and prev is not None
        and prev.agent_id not in item.excluded
        and prev.can_take(None)
    ):
        return prev, "sticky", {"load": prev.load}
    group = item.group_id
    if group is not None and group not in fallback:
        group = None  # the group was deleted: anyone may take the chat
    back = agents.get(item.returning_to or "")
    if (
        sticky_new_chats
        and back is not None
        and back.agent_id not in item.excluded
        and back.can_take(group)  # within the department the visitor chose
    ):
        return back, "returning_visitor", {"load": back.load}
    bots_allowed = item.previous_assignee_id is None and not item.excluded
    seen: set[str | None] = set()
    while group not in seen:
        seen.add(group)
        candidates = [
            a
            for a in agents.values()
            if a.agent_id not in item.excluded
            and a.can_take(group)
            and (bots_allowed or a.role != BOT_ROLE)
        ]
        if candidates:
            best = min(
                candidates,
                key=lambda a: (a.role != BOT_ROLE, a.load, a.idle_since, a.agent_id),
            )
            reason = "least_busy" if group == item.group_id else "group_fallback"
            return (
                best,
                reason,
                {"load": best.load, "candidates": len(candidates), "group_id": group},
            )
        if group is None:
            break
        group = fallback.get(group)
    return None, "", {}


def queue_entries(
    queue: list[Queued], visitor_names: dict[tuple[str, str], str | None], workspace_id: str
) -> tuple[QueueEntry, ...]:
    """The queue as agents see it (``GetQueue``, ``QueueUpdate``), oldest first."""
    return tuple(
        QueueEntry(
            conversation_id=item.conversation_id,
            visitor_id=item.visitor_id,
            visitor_name=visitor_names.get((workspace_id, item.visitor_id)),
            group_id=item.group_id,
            position=index,
            queued_at=item.queued_at,
            previous_assignee_id=item.previous_assignee_id,
            first_message_preview=item.preview,
        )
        for index, item in enumerate(queue, start=1)
    )


def push_positions(hub: Hub, workspace_id: str, queue: list[Queued], avg_wait_s: float) -> None:
    """Tell each queued visitor whose place moved its new position and estimated wait."""
    for index, item in enumerate(queue, start=1):
        if item.position_sent == index:
            continue
        item.position_sent = index
        hub.deliver_all(
            hub.visitor_connections(workspace_id, item.visitor_id),
            QueuePosition(
                conversation_id=item.conversation_id,
                position=index,
                estimated_wait_s=round(index * avg_wait_s, 1),
            ),
        )
