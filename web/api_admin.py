"""Workspace administration: workspaces (create, limits, suspend, terminate) and the audit log,
plus the helpers its sibling modules share (``audit``, ``workspace_changed``): agents and API
tokens are in ``web.api_agents``, groups and canned responses in ``web.api_catalogue``, the
widget, routing and tag settings in ``web.api_settings``.

Reads are scoped to the caller's workspace; ids from elsewhere are "not found". Every
security-relevant change is audited (role changes, disabling, password resets, tokens,
suspension, termination) with the actor and IP, never with secrets.
"""

from __future__ import annotations

import time
from typing import Any

from storage import Conflict as StorageConflict
from storage import Role, StorageError, WorkspaceStatus
from web.auth import SERVER_OPERATOR_KEY
from web.errors import Conflict, NotFound
from web.httpapi import ApiBlueprint, Call, bad_cursor
from web.passwords import generate_password
from web.schemas import AgentOut, WorkspaceList, WorkspaceOut
from web.schemas_admin import (
    AuditOut,
    AuditPage,
    CreateWorkspaceIn,
    PageQuery,
    TerminateIn,
    UpdateWorkspaceIn,
    WorkspaceCreated,
    WorkspaceLimitsIn,
)

api = ApiBlueprint("api_admin", "admin")
RESERVED_SETTINGS = frozenset({SERVER_OPERATOR_KEY})


async def audit(call: Call, action: str, target: str | None = None, **details: Any) -> None:
    await call.services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action=action,
        target=target,
        details=details,
        ip=call.ip,
    )


async def workspace_changed(call: Call) -> None:
    """Tell the engine that the caller's workspace settings, agents or groups changed, so
    routing and conversations apply the change now (the engine caches what it reads)."""
    await call.services.access.workspace_changed(call.workspace_id)


# ---------------------------------------------------------------- workspaces


async def _visible_workspace(call: Call, workspace_id: str) -> Any:
    """Your own workspace, or any for a server operator; else not found."""
    if workspace_id != call.workspace_id and not call.caller.server_operator:
        raise NotFound()
    ws = await call.services.storage.get_workspace(workspace_id)
    if ws is None:
        raise NotFound()
    return ws


@api.op("GET", "/workspaces", summary="Workspaces you can see", response=WorkspaceList)
async def list_workspaces(call: Call) -> WorkspaceList:
    if call.caller.server_operator:
        spaces = await call.services.storage.list_workspaces()
    else:
        spaces = [call.caller.workspace]
    return WorkspaceList(workspaces=tuple(WorkspaceOut.of(w) for w in spaces))


@api.op(
    "POST",
    "/workspaces",
    summary="Create a workspace with its owner (server operators)",
    body=CreateWorkspaceIn,
    response=WorkspaceCreated,
    status=201,
    role=Role.OWNER,
    operator=True,
)
async def create_workspace(call: Call, body: CreateWorkspaceIn) -> WorkspaceCreated:
    storage = call.services.storage
    if await storage.find_agent_by_username(body.owner_username.lower()) is not None:
        raise Conflict("this username is taken", code="username_taken", field="$.owner_username")
    ws = await storage.create_workspace(name=body.name, allowed_origins=body.allowed_origins)
    password = generate_password()
    try:
        owner = await storage.create_agent(
            ws.id,
            username=body.owner_username.lower(),
            display_name=body.owner_display_name,
            email=body.owner_email,
            role=Role.OWNER,
            password_hash=await call.services.hasher.hash(password),
        )
    except StorageConflict:
        raise Conflict("this username is taken", code="username_taken") from None
    await audit(call, "workspace.created", f"workspace:{ws.id}")
    return WorkspaceCreated(
        workspace=WorkspaceOut.of(ws), owner=AgentOut.of(owner), owner_password=password
    )


@api.op(
    "GET",
    "/workspaces/{workspace_id}",
    summary="One workspace",
    response=WorkspaceOut,
)
async def get_workspace(call: Call, workspace_id: str) -> WorkspaceOut:
    return WorkspaceOut.of(await _visible_workspace(call, workspace_id))


@api.op(
    "PATCH",
    "/workspaces/{workspace_id}",
    summary="Rename, set retention",
    body=UpdateWorkspaceIn,
    response=WorkspaceOut,
    role=Role.ADMIN,
)
async def update_workspace(call: Call, workspace_id: str, body: UpdateWorkspaceIn) -> WorkspaceOut:
    await _visible_workspace(call, workspace_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    ws = await call.services.storage.update_workspace(workspace_id, **changes)
    await call.services.access.workspace_updated(workspace_id)  # the widget shows its name
    await audit(call, "workspace.updated", f"workspace:{workspace_id}", fields=sorted(changes))
    return WorkspaceOut.of(ws)


@api.op(
    "PUT",
    "/workspaces/{workspace_id}/limits",
    summary="Seats and concurrency limits (server operators)",
    body=WorkspaceLimitsIn,
    response=WorkspaceOut,
    role=Role.OWNER,
    operator=True,
)
async def set_limits(call: Call, workspace_id: str, body: WorkspaceLimitsIn) -> WorkspaceOut:
    await _visible_workspace(call, workspace_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    ws = await call.services.storage.update_workspace(workspace_id, **changes)
    await audit(call, "workspace.limits_changed", f"workspace:{workspace_id}", **changes)
    await call.services.access.workspace_changed(workspace_id)  # routing honours the new cap
    return WorkspaceOut.of(ws)


async def _set_status(
    call: Call, workspace_id: str, status: WorkspaceStatus, **extra: Any
) -> WorkspaceOut:
    ws = await _visible_workspace(call, workspace_id)
    if workspace_id == call.workspace_id and status is not WorkspaceStatus.ACTIVE:
        raise Conflict("you cannot suspend your own workspace", code="own_workspace")
    ws = await call.services.storage.update_workspace(workspace_id, status=status, **extra)
    if status is not WorkspaceStatus.ACTIVE:
        await call.services.access.close_workspace(workspace_id, "workspace suspended")
    else:
        await call.services.access.workspace_updated(workspace_id)
    await audit(call, f"workspace.{status.value}", f"workspace:{workspace_id}")
    return WorkspaceOut.of(ws)


@api.op(
    "POST",
    "/workspaces/{workspace_id}/suspend",
    summary="Suspend: logins, widget and sockets refused until resumed (server operators)",
    response=WorkspaceOut,
    role=Role.OWNER,
    operator=True,
)
async def suspend_workspace(call: Call, workspace_id: str) -> WorkspaceOut:
    return await _set_status(call, workspace_id, WorkspaceStatus.SUSPENDED)


@api.op(
    "POST",
    "/workspaces/{workspace_id}/resume",
    summary="Lift a suspension (server operators)",
    response=WorkspaceOut,
    role=Role.OWNER,
    operator=True,
)
async def resume_workspace(call: Call, workspace_id: str) -> WorkspaceOut:
    return await _set_status(call, workspace_id, WorkspaceStatus.ACTIVE, terminated_at=None)


@api.op(
    "POST",
    "/workspaces/{workspace_id}/terminate",
    summary="Terminate; data is purged after the grace period (server operators)",
    body=TerminateIn,
    response=WorkspaceOut,
    role=Role.OWNER,
    operator=True,
)
async def terminate_workspace(call: Call, workspace_id: str, body: TerminateIn) -> WorkspaceOut:
    purge_at = time.time() + body.grace_days * 86400.0
    return await _set_status(call, workspace_id, WorkspaceStatus.TERMINATED, terminated_at=purge_at)


# ---------------------------------------------------------------- audit log


@api.op(
    "GET",
    "/audit",
    summary="Audit log, newest first",
    query=PageQuery,
    response=AuditPage,
    role=Role.ADMIN,
)
async def list_audit(call: Call, query: PageQuery) -> AuditPage:
    return await _audit_page(call, call.workspace_id, query)


@api.op(
    "GET",
    "/audit/server",
    summary="Server-wide audit log (workspace purges, backups), newest first",
    query=PageQuery,
    response=AuditPage,
    role=Role.OWNER,
    operator=True,
)
async def list_server_audit(call: Call, query: PageQuery) -> AuditPage:
    """Entries that belong to no workspace: a purged workspace's own log is gone with it, so
    its ``workspace.purged`` entry (with the row counts deleted) is kept here for operators."""
    return await _audit_page(call, None, query)


async def _audit_page(call: Call, workspace_id: str | None, query: PageQuery) -> AuditPage:
    try:
        page = await call.services.storage.list_audit(
            workspace_id, limit=query.limit, cursor=query.cursor
        )
    except (StorageError, ValueError):
        if query.cursor is None:
            raise
        raise bad_cursor() from None
    entries = tuple(
        AuditOut(
            id=e.id,
            actor=e.actor,
            action=e.action,
            target=e.target,
            details=dict(e.details),
            ip=e.ip,
            at=e.at,
            seq=e.seq,
        )
        for e in page.items
    )
    return AuditPage(entries=entries, next_cursor=page.next_cursor)


def attrs_dict(obj: Any) -> dict[str, Any]:
    import attrs

    return {f.name: getattr(obj, f.name) for f in attrs.fields(type(obj))}
