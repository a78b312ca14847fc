"""Request and response bodies of the HTTP admin API (``/api/v1``), as attrs classes.

One class per body: ``web.wire`` structures requests into them (strict, precise 400s) and
``web.jsonschema`` describes them in ``/openapi.json``. Responses never carry secrets: no
password hashes, no token hashes, no visitor tokens; secrets a client must see once (a generated
password, a new API token) appear only in the response that created them.

This module holds what every family shares (the error body, ``Done``, field limits), the
caller's own account and login; the families live beside it: ``schemas_admin`` (workspaces,
agents, groups, canned responses, tags, tokens, audit), ``schemas_settings`` (widget, routing,
business hours), ``schemas_chats`` (conversations, visitors, bans, reports), ``schemas_files``,
``schemas_ops`` (supervision, faults, backups) and ``schemas_security`` (two-factor, SSO).
"""

from __future__ import annotations

from typing import Literal

import attrs

from storage import (
    Agent,
    Role,
    Workspace,
    WorkspaceStatus,
)
from web.wire import text

NAME = 200
ID = 128
USERNAME_PATTERN = r"[A-Za-z0-9_.@-]{3,64}"

# ---------------------------------------------------------------- shared


@attrs.frozen(kw_only=True)
class ErrorDetail:
    code: str
    message: str
    field: str | None = None


@attrs.frozen(kw_only=True)
class ErrorBody:
    """Every non-2xx answer of /api/v1."""

    error: ErrorDetail


@attrs.frozen(kw_only=True)
class Done:
    """The action was carried out."""

    ok: bool = True


# ---------------------------------------------------------------- agents and workspaces


@attrs.frozen(kw_only=True)
class AgentOut:
    id: str
    workspace_id: str
    username: str
    display_name: str
    email: str | None
    role: Role
    enabled: bool
    max_chats: int
    group_ids: tuple[str, ...]
    avatar_url: str | None
    created_at: float

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(
            id=agent.id,
            workspace_id=agent.workspace_id,
            username=agent.username,
            display_name=agent.display_name,
            email=agent.email,
            role=agent.role,
            enabled=agent.enabled,
            max_chats=agent.max_chats,
            group_ids=tuple(agent.group_ids),
            avatar_url=agent.avatar_url,
            created_at=agent.created_at,
        )


@attrs.frozen(kw_only=True)
class AgentList:
    agents: tuple[AgentOut, ...]


@attrs.frozen(kw_only=True)
class WorkspaceOut:
    id: str
    name: str
    widget_key: str
    allowed_origins: tuple[str, ...]
    status: WorkspaceStatus
    agent_seats: int
    max_concurrent_chats: int
    retention_days: int | None
    terminated_at: float | None
    created_at: float

    @classmethod
    def of(cls, ws: Workspace) -> WorkspaceOut:
        return cls(
            id=ws.id,
            name=ws.name,
            widget_key=ws.widget_key,
            allowed_origins=tuple(ws.allowed_origins),
            status=ws.status,
            agent_seats=ws.agent_seats,
            max_concurrent_chats=ws.max_concurrent_chats,
            retention_days=ws.retention_days,
            terminated_at=ws.terminated_at,
            created_at=ws.created_at,
        )


@attrs.frozen(kw_only=True)
class WorkspaceList:
    workspaces: tuple[WorkspaceOut, ...]


# ---------------------------------------------------------------- auth


@attrs.frozen(kw_only=True)
class LoginIn:
    username: str = attrs.field(**text(max_len=320, min_len=1))
    password: str = attrs.field(**text(max_len=256, min_len=1))


@attrs.frozen(kw_only=True)
class Me:
    """The caller: its account, its workspace and (cookie sessions) the CSRF token to send."""

    agent: AgentOut
    workspace: WorkspaceOut
    csrf_token: str | None
    auth: Literal["session", "token"]
    server_operator: bool


@attrs.frozen(kw_only=True)
class ChangePasswordIn:
    current_password: str = attrs.field(**text(max_len=256, min_len=1))
    new_password: str = attrs.field(**text(max_len=256, min_len=10))
