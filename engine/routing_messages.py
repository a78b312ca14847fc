"""What the workspace router is asked and answers: its queries, commands and reply payloads.

Kept apart from ``engine.routing`` (the actor) so callers that only ask the router, the facade
and the request dispatcher, need not read its rules. The messages other actors send the router
are defined beside their sender (``ConversationChanged``, ``VisitorSeen``, ``GetAgentMirror``);
``engine.routing.RouterMsg`` joins them all into the router's mailbox type.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine.actor import Reply
from engine.messages import QueueEntry, VisitorSummary

__all__ = [
    "AgentsView",
    "GetAgents",
    "GetAtRest",
    "GetQueue",
    "GetVisitors",
    "Tick",
    "WorkspaceChanged",
]


@attrs.frozen(kw_only=True, eq=False)
class GetQueue:
    reply: Reply[tuple[QueueEntry, ...]]


@attrs.frozen(kw_only=True, eq=False)
class AgentsView:
    agents: tuple[Any, ...]
    available: bool
    routing_mode: str


@attrs.frozen(kw_only=True, eq=False)
class GetAgents:
    reply: Reply[AgentsView]


@attrs.frozen(kw_only=True, eq=False)
class GetVisitors:
    reply: Reply[tuple[VisitorSummary, ...]]


@attrs.frozen(kw_only=True, eq=False)
class GetAtRest:
    """Whether the router holds nothing a fresh router would not rebuild from storage (a
    cluster node hands an idle workspace back only then, web/placement.py)."""

    reply: Reply[bool]


@attrs.frozen(kw_only=True, eq=False)
class Tick:
    pass


@attrs.frozen(kw_only=True, eq=False)
class WorkspaceChanged:
    """Settings, agents or groups changed in storage: reload them (answered once applied)."""

    reply: Reply[None]
