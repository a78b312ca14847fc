"""The engine's facade: what the web layer calls. Connect, request, disconnect, kick.

The web layer decodes a frame with ``engine.codec.structure_command``, calls
``ChatEngine.request(conn, command)`` and encodes the ``Result`` (or the error's
``codec.error_result``); pushes arrive on the outbox it passed to ``connect``.

Authorization lives here: a visitor principal only ever sees its own conversations (a foreign
or guessed id answers ``not_found``, exactly like a missing one); an agent only its workspace;
roles gate supervisor commands. Visibility ``agents`` events never reach a visitor's outbox.

Backpressure: fan-out to an outbox is ``send_nowait``; a full outbox (slow consumer) drops the
subscriber and closes its outbox. The web layer then closes the socket ("slow consumer,
resume") and the client reconnects with ``resume={conversation_id: last_seq}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import trio

from engine.messages import Command, Push, Result
from storage.api import Role

__all__ = [
    "AgentPrincipal",
    "ChatEngine",
    "Connection",
    "ConnectionMeta",
    "EngineConfig",
    "Principal",
    "VisitorPrincipal",
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


@attrs.frozen(kw_only=True)
class ConnectionMeta:
    """What the transport knows of a connection; ``page`` is a visitor's first page view."""

    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    page_title: str | None = None
    page_referrer: str | None = None


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Every engine knob, read once at start-up; units in the names."""

    mailbox_size: int = 1024  # per actor; ``tell`` waits when full
    outbox_size: int = 256  # per connection, created by the web layer with this size
    idle_timeout_s: float = 300.0  # passivate a virtual actor after this long without messages
    ask_timeout_s: float = 10.0  # deadline for one command crossing into an actor
    storage_timeout_s: float = 10.0  # deadline for one storage call made by an actor
    agent_response_timeout_s: float = 60.0  # re-route a chat the assignee has not answered
    disconnect_grace_s: float = 30.0  # an agent with no connection is offline after this
    visitor_leave_grace_s: float = 15.0  # a visitor with no tab open "left" after this
    typing_ttl_s: float = 6.0  # a typing/viewing signal expires unless refreshed
    typing_min_interval_s: float = 0.3  # rate limit for ephemeral signals per sender
    message_rate_per_s: float = 5.0  # token bucket per visitor for durable sends
    message_burst: int = 20
    max_resume_gap: int = 500  # more missed events than this: resync_required
    recent_events: int = 200  # events a conversation keeps in memory for fast replay
    restart_max: int = 5  # restart intensity of a conversation/visitor/agent actor
    restart_period_s: float = 10.0
    default_routing_mode: str = "auto"  # "auto" | "manual"; workspace settings override
    default_max_chats: int = 5  # when an agent record has none
    avg_handle_time_s: float = 300.0  # seed for the estimated wait before data exists
    abandon_queued_after_s: float = 0.0  # 0: never; else close a queued chat as missed


@attrs.define(eq=False)
class Connection:
    """A live client connection: the handle ``request`` and ``disconnect`` take.

    ``welcome`` is the initial state (``VisitorWelcome`` / ``AgentWelcome``) the web layer sends
    as the first frame; it is also pushed into the outbox before any replayed event.
    """

    id: str
    principal: Principal
    outbox: trio.MemorySendChannel[Push]
    meta: ConnectionMeta
    welcome: object = None
    watching: set[str] = attrs.field(factory=set)  # conversations this connection follows
    visitor_list: bool = False  # agent subscribed to visitor_update
    closed: bool = False
    _on_close: list[Callable[[], None]] = attrs.field(factory=list)

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id


ResumePoints = Mapping[str, int]


class ChatEngine:
    """The engine: owns the actor tree; every client interaction goes through it.

    Lifecycle: ``await nursery.start(engine.serve)`` (returns once ready to accept);
    ``await engine.shutdown(deadline_s=...)`` stops intake, drains mailboxes, lets storage flush
    and stops the tree in reverse order; cancelling ``serve`` stops everything at once.
    """

    def __init__(
        self,
        storage: object,
        config: EngineConfig,
        *,
        metrics: object | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        raise NotImplementedError("being implemented")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run registries, supervisors and timers until cancelled (or ``shutdown``)."""
        raise NotImplementedError

    async def shutdown(self, *, deadline_s: float) -> None:
        """Stop intake (``shutting_down``), drain, flush, stop in reverse order by the deadline."""
        raise NotImplementedError

    async def connect(
        self,
        principal: Principal,
        outbox: trio.MemorySendChannel[Push],
        *,
        connection_id: str,
        resume: ResumePoints | None = None,
        meta: ConnectionMeta | None = None,
    ) -> Connection:
        """Register a subscriber; replay events after each resume seq, then live ones."""
        raise NotImplementedError

    async def request(self, conn: Connection, command: Command) -> Result:
        """Run one command for ``conn``; raises ``engine.errors.DomainError`` (with ``code``)."""
        raise NotImplementedError

    async def disconnect(self, conn: Connection) -> None:
        """Unregister; agents go offline after ``disconnect_grace_s``, visitors leave later."""
        raise NotImplementedError

    async def kick(
        self,
        *,
        workspace_id: str,
        agent_id: str | None = None,
        visitor_id: str | None = None,
        reason: str,
    ) -> None:
        """Logout/ban: push ``session_closed`` to matching connections and drop them."""
        raise NotImplementedError
