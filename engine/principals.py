"""Who is on the other end of a connection: principals, the connection handle, origin keys.

A leaf of the engine (it imports only the message classes and storage's ``Role``), so the
actors, the hub and the facade can all name a connection without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio

from engine.messages import Push
from storage import Role

__all__ = [
    "AgentPrincipal",
    "Connection",
    "ConnectionMeta",
    "Principal",
    "ResumePoints",
    "VisitorPrincipal",
    "offline_message_origin",
    "start_chat_origin",
]


@attrs.frozen(kw_only=True)
class VisitorPrincipal:
    workspace_id: str
    visitor_id: str


@attrs.frozen(kw_only=True)
class AgentPrincipal:
    workspace_id: str
    agent_id: str
    role: Role
    display_name: str

    @property
    def is_supervisor(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMIN, Role.OWNER)


Principal = VisitorPrincipal | AgentPrincipal


def start_chat_origin(visitor_id: str, agent_id: str, client_msg_id: str) -> str:
    """The storage ``origin_key`` of an agent's ``start_chat``: a retry finds its chat."""
    return f"start_chat:{visitor_id}:{agent_id}:{client_msg_id}"


def offline_message_origin(visitor_id: str, client_msg_id: str) -> str:
    """The storage ``origin_key`` of a visitor's ``offline_message``."""
    return f"offline_message:{visitor_id}:{client_msg_id}"


@attrs.frozen(kw_only=True)
class ConnectionMeta:
    """What the transport knows of a connection; ``page`` is a visitor's first page view."""

    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    page_title: str | None = None
    page_referrer: str | None = None


@attrs.define(eq=False)
class Connection:
    """A live client connection: the handle ``request`` and ``disconnect`` take.

    ``welcome`` is the initial state (``VisitorWelcome`` / ``AgentWelcome``), set by ``connect``
    and sent by the web layer inside its hello/auth result. It is not pushed into the outbox:
    the outbox carries only what follows it (replayed events for ``resume``, then live pushes),
    so the web layer must send the welcome before it starts forwarding the outbox.
    """

    id: str
    principal: Principal
    outbox: trio.MemorySendChannel[Push]
    meta: ConnectionMeta
    welcome: object = None
    watching: set[str] = attrs.field(factory=set)  # conversations this connection follows
    visitor_list: bool = False  # agent subscribed to visitor_update
    resuming: set[str] = attrs.field(factory=set)  # live events held back until replayed
    closed: bool = False

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id

    @property
    def for_visitor(self) -> bool:
        """A visitor's connection: what it receives goes through ``engine.visibility``."""
        return isinstance(self.principal, VisitorPrincipal)


ResumePoints = Mapping[str, int]
