"""Errors raised by the engine, and the root of every error the project raises.

Hierarchy::

    LiveChatError                   root of ALL project errors (defined in ``storage.errors``,
                                    the lowest layer, so no package imports upwards to reach it)
    └── EngineError                 raised by the actor runtime, or by a handler to its asker
        ├── ActorStopped            tell/ask to an actor that has stopped (its mailbox is closed),
        │                           or the actor stopped/crashed before replying to an ask
        ├── AskTimeout              reserved for an ``ask(timeout=...)``; callers use
        │                           ``trio.fail_after`` today, which raises ``trio.TooSlowError``
        ├── RestartIntensityExceeded  a supervisor saw more than ``max_restarts`` restarts in
        │                           ``period_s``; it stopped its children and escalates
        └── ShuttingDown            the engine no longer accepts intake (new actors, children)
    └── InjectedFault               an operator's injected crash (``debug_fault_injection``):
                                    not an EngineError, so it crashes the actor like a bug would

An ``EngineError`` subclass raised by ``Actor.handle`` while an ask is pending is sent to the
asker and the actor keeps running; any other exception crashes the actor. Domain errors
(e.g. "already_assigned") therefore subclass ``EngineError`` and are appended below the marker.
"""

from __future__ import annotations

from storage.errors import LiveChatError as LiveChatError  # re-exported: the root


class EngineError(LiveChatError):
    """An error of the engine: runtime failures and domain rule violations alike."""


class ActorStopped(EngineError):
    """The actor is gone: its mailbox is closed, or it stopped or crashed before replying."""


class AskTimeout(EngineError):
    """An ask did not get its reply in time (for an ``ask`` that takes its own timeout)."""


class RestartIntensityExceeded(EngineError):
    """A supervisor gave up: too many restarts in its period; its parent decides what next."""


class ShuttingDown(EngineError):
    """The engine is draining and accepts no new intake."""


class InjectedFault(LiveChatError):
    """A crash injected on purpose (``ChatEngine.inject_fault``), to prove restarts work."""


# --- domain errors ---
#
# Domain errors: a rule of the chat domain said no. Each has a stable wire ``code`` (the web
# layer sends it in an ``error`` frame) and optionally the offending ``field`` path.
#
#   EngineError
#   └── DomainError                 code "engine_error"; base of the rule violations below
#       ├── InvalidMessage          "unknown_type" | "missing_field" | "invalid_field" (+ field)
#       ├── NotFound                "not_found": missing, or not yours (same answer on purpose)
#       ├── Forbidden               "forbidden": your role may not do this
#       ├── AlreadyAssigned         "already_assigned": another agent took the chat first
#       ├── AlreadyOpen             "already_open": the visitor already has an open chat
#       ├── InvalidIdentity         "invalid_identity" (field "identity.signature"): a
#       │                           visitor's signed identity does not verify
#       ├── AgentAtCapacity         "agent_at_capacity": the agent has max_chats chats already
#       │   └── WorkspaceAtCapacity "workspace_at_capacity": max_concurrent_chats are active
#       ├── InvalidState            "invalid_state": not possible in the chat's current state
#       │   └── IllegalTransition   same code: a planned event would leave the transition
#       │                           table or break an invariant (engine.conversation_state)
#       ├── ConversationClosed      "conversation_closed": the chat is closed
#       ├── RateLimited             "rate_limited" (+ retry_after_s)
#       ├── Overloaded              "overloaded": an actor did not answer within its deadline
#       └── PersistenceUnavailable  "storage_unavailable": storage failed; nothing was stored
#           └── PersistenceRefused  same code: the database refused this command's own data
#
# Runtime errors map to codes through ``error_code``: ShuttingDown → "shutting_down",
# ActorStopped / RestartIntensityExceeded → "unavailable".


class DomainError(EngineError):
    """A chat rule refused a command; ``code`` is stable on the wire."""

    code: str = "engine_error"

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message or type(self).code)
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after_s = retry_after_s


class InvalidMessage(DomainError):
    """A malformed command; ``code`` says how, ``field`` says where (e.g. ``"text"``)."""

    code = "invalid_field"


class NotFound(DomainError):
    code = "not_found"


class Forbidden(DomainError):
    code = "forbidden"


class AlreadyAssigned(DomainError):
    code = "already_assigned"


class AlreadyOpen(DomainError):
    """One visitor has at most one open chat: a proactive start while one is open."""

    code = "already_open"


class InvalidIdentity(DomainError):
    """A visitor's signed identity does not verify (engine.identity); nothing was created."""

    code = "invalid_identity"
class AgentAtCapacity(DomainError):
    """A pick or transfer would take the agent past their ``max_chats``."""

    code = "agent_at_capacity"


class WorkspaceAtCapacity(AgentAtCapacity):
    """A pick would take the workspace past ``max_concurrent_chats`` active chats."""

    code = "workspace_at_capacity"


class InvalidState(DomainError):
    code = "invalid_state"


class IllegalTransition(InvalidState):
    """A planned event would move a chat along an edge outside the transition table, or
    leave it breaking an invariant: the command fails alone and nothing is stored."""


class ConversationClosed(DomainError):
    code = "conversation_closed"


class RateLimited(DomainError):
    code = "rate_limited"


class Overloaded(DomainError):
    code = "overloaded"


class PersistenceUnavailable(DomainError):
    code = "storage_unavailable"


class PersistenceRefused(PersistenceUnavailable):
    """The database refused this command's data (not an outage): commands batched with it are
    retried without it, so it fails alone."""


# The client's answer names no internal detail: the storage's own text goes to the log only.
STORAGE_FAILED_MESSAGE = "storage is unavailable; retry with the same client_msg_id"


def error_code(exc: BaseException) -> str | None:
    """The stable wire code of an engine error, or ``None`` for anything that is not ours."""
    if isinstance(exc, DomainError):
        return exc.code
    if isinstance(exc, ShuttingDown):
        return "shutting_down"
    if isinstance(exc, ActorStopped | RestartIntensityExceeded):
        return "unavailable"
    if isinstance(exc, EngineError):
        return "engine_error"
    return None
