"""The chat engine: supervised Trio actors for conversations, agents and visitors, and routing.

Knows nothing of HTTP, JSON or SQL; reaches storage only through ``storage``'s interface.
The web layer needs: ``ChatEngine``, ``EngineConfig``, the principals, ``ConnectionMeta``,
``structure_command`` / ``unstructure`` / ``error_result`` and the message classes.
"""

from __future__ import annotations

from engine.actor import Actor, ActorRef, Mailbox, Ref, Reply, ReplyChannel, start_actor
from engine.api import (
    AgentPrincipal,
    ChatEngine,
    Connection,
    ConnectionMeta,
    EngineConfig,
    Principal,
    VisitorPrincipal,
)
from engine.codec import (
    COMMANDS_BY_TYPE,
    check_frame,
    client_converter,
    client_message,
    error_result,
    structure_command,
    structure_frame,
    structure_push,
    structure_result,
    unstorable,
    unstructure,
    unstructure_command,
)
from engine.errors import (
    ActorStopped,
    AlreadyAssigned,
    AskTimeout,
    ConversationClosed,
    DomainError,
    EngineError,
    Forbidden,
    InjectedFault,
    InvalidIdentity,
    InvalidMessage,
    InvalidState,
    LiveChatError,
    NotFound,
    Overloaded,
    PersistenceRefused,
    PersistenceUnavailable,
    RateLimited,
    RestartIntensityExceeded,
    ShuttingDown,
    error_code,
)
from engine.failure_log import FailureLog
from engine.hours import minutes_of_day, read_hours, valid_time_zone
from engine.identity import IdentifiedVisitor, VisitorIdentity
from engine.messages import *  # noqa: F403 - the message classes are the protocol
from engine.messages import __all__ as _messages_all
from engine.metrics import EngineMetrics
from engine.registry import Registry, RegistryRef
from engine.supervisor import (
    ChildSpec,
    RestartStrategy,
    RestartType,
    ServiceSpec,
    Supervisor,
    TaskService,
    TreeNode,
)
from engine.useragent import DeviceInfo, parse_user_agent
from engine.visibility import VISITOR_HIDDEN_SUMMARY_FIELDS, visitor_data_keys

__all__ = [
    "COMMANDS_BY_TYPE",
    "Actor",
    "ActorRef",
    "ActorStopped",
    "AgentPrincipal",
    "AlreadyAssigned",
    "AskTimeout",
    "ChatEngine",
    "ChildSpec",
    "Connection",
    "ConnectionMeta",
    "ConversationClosed",
    "DeviceInfo",
    "DomainError",
    "EngineConfig",
    "EngineError",
    "EngineMetrics",
    "FailureLog",
    "Forbidden",
    "IdentifiedVisitor",
    "InjectedFault",
    "InvalidIdentity",
    "InvalidMessage",
    "InvalidState",
    "LiveChatError",
    "Mailbox",
    "NotFound",
    "Overloaded",
    "PersistenceRefused",
    "PersistenceUnavailable",
    "Principal",
    "RateLimited",
    "Ref",
    "Registry",
    "RegistryRef",
    "Reply",
    "ReplyChannel",
    "RestartIntensityExceeded",
    "RestartStrategy",
    "RestartType",
    "ServiceSpec",
    "ShuttingDown",
    "Supervisor",
    "TaskService",
    "TreeNode",
    "VISITOR_HIDDEN_SUMMARY_FIELDS",
    "VisitorIdentity",
    "VisitorPrincipal",
    "check_frame",
    "client_converter",
    "client_message",
    "error_code",
    "error_result",
    "minutes_of_day",
    "parse_user_agent",
    "read_hours",
    "start_actor",
    "structure_command",
    "structure_frame",
    "structure_push",
    "structure_result",
    "unstorable",
    "unstructure",
    "unstructure_command",
    "valid_time_zone",
    "visitor_data_keys",
    *_messages_all,
]
