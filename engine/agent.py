"""An agent as the router sees it: status, connections, load, groups, idle time.

Agents are not separate actors: their routing state lives inside the workspace router (one
serialized place decides who is free), and their connections live in the ``Hub``. This module
holds the per-agent record and the eligibility rules the router applies.
"""

from __future__ import annotations

import attrs

from engine.messages import AgentStatus, AgentSummary

__all__ = ["AgentState"]


@attrs.define(slots=True, kw_only=True, eq=False)
class AgentState:
    agent_id: str
    display_name: str
    role: str
    max_chats: int
    group_ids: tuple[str, ...]
    chosen: AgentStatus = AgentStatus.ACCEPTING  # what the agent asked for
    connected: bool = False
    disconnected_at: float | None = None  # start of the grace period
    active: set[str] = attrs.field(factory=set)  # chats assigned to this agent
    pending: set[str] = attrs.field(factory=set)  # proposed, not yet confirmed
    idle_since: float = 0.0  # when the agent last got a chat or became free

    @property
    def status(self) -> AgentStatus:
        if not self.connected and self.disconnected_at is None:
            return AgentStatus.OFFLINE
        return self.chosen

    @property
    def load(self) -> int:
        return len(self.active) + len(self.pending)

    @property
    def online(self) -> bool:
        """Connected now (not in a grace period) and accepting chats, whatever the load."""
        return self.connected and self.chosen == AgentStatus.ACCEPTING

    def can_take(self, group_id: str | None) -> bool:
        """Accepting, connected now (not in a grace period), below the chat limit, in group."""
        return (
            self.connected
            and self.chosen == AgentStatus.ACCEPTING
            and self.load < self.max_chats
            and (group_id is None or group_id in self.group_ids)
        )

    def summary(self) -> AgentSummary:
        return AgentSummary(
            agent_id=self.agent_id,
            display_name=self.display_name,
            role=self.role,
            status=str(self.status),
            active_chats=len(self.active),
            max_chats=self.max_chats,
            group_ids=self.group_ids,
        )
