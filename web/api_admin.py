"""Workspace administration: workspaces, agents, groups, canned responses, tags, widget and
routing settings, API tokens and the audit log.

Reads are scoped to the caller's workspace; ids from elsewhere are "not found". Every
security-relevant change is audited (role changes, disabling, password resets, tokens,
suspension, termination) with the actor and IP, never with secrets.
"""

from __future__ import annotations

import time
from typing import Any

import cattrs

from storage import Conflict as StorageConflict
from storage import Role, StorageError, WorkspaceStatus
from web.api_auth import end_other_sessions
from web.auth import SERVER_OPERATOR_KEY, hash_secret, new_secret
from web.errors import BadRequest, Conflict, Forbidden, NotFound
from web.httpapi import ROLE_RANK, ApiBlueprint, Call, bad_cursor
from web.passwords import generate_password
from web.protocol import CloseCode
from web.schemas import (
    AgentCreated,
    AgentList,
    AgentOut,
    AuditOut,
    AuditPage,
    CannedIn,
    CannedList,
    CannedOut,
    CannedPatchIn,
    CreateAgentIn,
    CreateTokenIn,
    CreateWorkspaceIn,
    Done,
    GroupIn,
    GroupList,
    GroupOut,
    GroupPatchIn,
    IdentitySecret,
    PageQuery,
    PasswordOut,
    RoutingSettings,
    TagsIn,
    TagsOut,
    TerminateIn,
    TokenCreated,
    TokenList,
    TokenOut,
    UpdateAgentIn,
    UpdateWorkspaceIn,
    WidgetSettings,
    WidgetSettingsIn,
    WidgetSettingsPatch,
    WorkspaceCreated,
    WorkspaceLimitsIn,
    WorkspaceList,
    WorkspaceOut,
)
from web.wire import api_converter

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
    await call.services.gateway.workspace_changed(call.workspace_id)


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
    await call.services.gateway.workspace_changed(workspace_id)  # routing honours the new cap
    return WorkspaceOut.of(ws)


async def _set_status(
    call: Call, workspace_id: str, status: WorkspaceStatus, **extra: Any
) -> WorkspaceOut:
    ws = await _visible_workspace(call, workspace_id)
    if workspace_id == call.workspace_id and status is not WorkspaceStatus.ACTIVE:
        raise Conflict("you cannot suspend your own workspace", code="own_workspace")
    ws = await call.services.storage.update_workspace(workspace_id, status=status, **extra)
    if status is not WorkspaceStatus.ACTIVE:
        for sock in call.services.sockets.of_workspace(workspace_id):
            sock.close(CloseCode.POLICY, "workspace suspended")
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


# ---------------------------------------------------------------- agents


async def _agent(call: Call, agent_id: str) -> Any:
    agent = await call.services.storage.get_agent(call.workspace_id, agent_id)
    if agent is None:
        raise NotFound()
    return agent


def _may_manage(call: Call, role: Role) -> None:
    """Admins manage up to admin; only owners create or change owners."""
    if ROLE_RANK[role] > ROLE_RANK[call.caller.agent.role]:
        raise Forbidden("you cannot grant or manage a role above your own")


async def _check_groups(call: Call, group_ids: tuple[str, ...]) -> None:
    for i, group_id in enumerate(group_ids):
        if await call.services.storage.get_group(call.workspace_id, group_id) is None:
            raise BadRequest("no such group", code="invalid_value", field=f"$.group_ids[{i}]")


@api.op("GET", "/agents", summary="Agents of the workspace", response=AgentList)
async def list_agents(call: Call) -> AgentList:
    agents = await call.services.storage.list_agents(call.workspace_id)
    return AgentList(agents=tuple(AgentOut.of(a) for a in agents))


@api.op(
    "POST",
    "/agents",
    summary="Create (invite) an agent; a password is generated unless given",
    body=CreateAgentIn,
    response=AgentCreated,
    status=201,
    role=Role.ADMIN,
)
async def create_agent(call: Call, body: CreateAgentIn) -> AgentCreated:
    _may_manage(call, body.role)
    await _check_groups(call, body.group_ids)
    storage = call.services.storage
    agents = await storage.list_agents(call.workspace_id)
    if len(agents) >= call.caller.workspace.agent_seats:
        raise Conflict("all agent seats are taken", code="seats_exhausted")
    generated = body.password is None
    password = body.password or generate_password()
    bot = body.role is Role.BOT  # a bot never logs in: it uses an API token (docs/bots.md)
    if bot and body.password is not None:
        raise BadRequest("a bot has no password", code="invalid_value", field="$.password")
    try:
        agent = await storage.create_agent(
            call.workspace_id,
            username=body.username.lower(),
            display_name=body.display_name,
            email=body.email,
            role=body.role,
            password_hash=None if bot else await call.services.hasher.hash(password),
            max_chats=body.max_chats,
            group_ids=body.group_ids,
        )
    except StorageConflict:
        raise Conflict(
            "this username is taken", code="username_taken", field="$.username"
        ) from None
    await workspace_changed(call)
    await audit(call, "agent.created", f"agent:{agent.id}", role=agent.role.value)
    # Invitation mail (web/api_mail.py): a single-use link to choose a password; a bot has none.
    from web.api_mail import mail_agent_link

    invited = not bot and await mail_agent_link(
        call.services, call.caller.workspace, agent, purpose="invitation"
    )
    if invited:
        await audit(call, "agent.invited", f"agent:{agent.id}")
    shown = password if generated and not bot else None
    return AgentCreated(agent=AgentOut.of(agent), password=shown, invited=invited)


@api.op("GET", "/agents/{agent_id}", summary="One agent", response=AgentOut)
async def get_agent(call: Call, agent_id: str) -> AgentOut:
    return AgentOut.of(await _agent(call, agent_id))


@api.op(
    "PATCH",
    "/agents/{agent_id}",
    summary="Change name, role, groups, chat limit, or disable an agent",
    body=UpdateAgentIn,
    response=AgentOut,
    role=Role.ADMIN,
)
async def update_agent(call: Call, agent_id: str, body: UpdateAgentIn) -> AgentOut:
    agent = await _agent(call, agent_id)
    _may_manage(call, agent.role)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    if body.role is not None:
        _may_manage(call, body.role)
        if agent.id == call.caller.agent.id and body.role is not agent.role:
            raise Conflict("you cannot change your own role", code="own_account")
    if body.enabled is False and agent.id == call.caller.agent.id:
        raise Conflict("you cannot disable your own account", code="own_account")
    if body.group_ids is not None:
        await _check_groups(call, body.group_ids)
    updated = await call.services.storage.update_agent(call.workspace_id, agent_id, **changes)
    await workspace_changed(call)
    if body.role is not None and body.role is not agent.role:
        # An open socket carries the role it authenticated with: end it now, so a demoted
        # supervisor cannot whisper (or watch silently) until it reconnects with the new role.
        for sock in call.services.sockets.of_agent(call.workspace_id, agent_id):
            sock.close(CloseCode.PRIVILEGES_CHANGED, "role changed")
        await audit(
            call,
            "agent.role_changed",
            f"agent:{agent_id}",
            old=agent.role.value,
            new=body.role.value,
        )
    if body.enabled is False and agent.enabled:
        await end_other_sessions(call, agent_id, keep_session=None, reason="account disabled")
        await audit(call, "agent.disabled", f"agent:{agent_id}")
    elif body.enabled is True and not agent.enabled:
        await audit(call, "agent.enabled", f"agent:{agent_id}")
    other = set(changes) - {"role", "enabled"}
    if other:
        await audit(call, "agent.updated", f"agent:{agent_id}", fields=sorted(other))
    return AgentOut.of(updated)


@api.op(
    "POST",
    "/agents/{agent_id}/reset-password",
    summary="Generate a new password (shown once); ends the agent's sessions",
    response=PasswordOut,
    role=Role.ADMIN,
)
async def reset_password(call: Call, agent_id: str) -> PasswordOut:
    agent = await _agent(call, agent_id)
    _may_manage(call, agent.role)
    password = generate_password()
    await call.services.storage.update_agent(
        call.workspace_id,
        agent_id,
        password_hash=await call.services.hasher.hash(password),
        password_changed_at=time.time(),
    )
    await end_other_sessions(call, agent_id, keep_session=None, reason="password reset")
    await audit(call, "agent.password_reset", f"agent:{agent_id}")
    return PasswordOut(password=password)


# ---------------------------------------------------------------- groups


def _group_out(g: Any) -> GroupOut:
    return GroupOut(
        id=g.id, name=g.name, fallback_group_id=g.fallback_group_id, public=g.public
    )


@api.op("GET", "/groups", summary="Agent groups (departments)", response=GroupList)
async def list_groups(call: Call) -> GroupList:
    groups = await call.services.storage.list_groups(call.workspace_id)
    return GroupList(groups=tuple(_group_out(g) for g in groups))


async def _check_fallback(call: Call, fallback: str | None, own_id: str | None = None) -> None:
    if fallback is None:
        return
    if (
        fallback == own_id
        or await call.services.storage.get_group(call.workspace_id, fallback) is None
    ):
        raise BadRequest("no such group", code="invalid_value", field="$.fallback_group_id")


@api.op(
    "POST",
    "/groups",
    summary="Create a group",
    body=GroupIn,
    response=GroupOut,
    status=201,
    role=Role.ADMIN,
)
async def create_group(call: Call, body: GroupIn) -> GroupOut:
    await _check_fallback(call, body.fallback_group_id)
    group = await call.services.storage.create_group(
        call.workspace_id,
        name=body.name,
        fallback_group_id=body.fallback_group_id,
        public=body.public,
    )
    await workspace_changed(call)
    await audit(call, "group.created", f"group:{group.id}")
    return _group_out(group)


@api.op(
    "PATCH",
    "/groups/{group_id}",
    summary="Rename a group or set its fallback",
    body=GroupPatchIn,
    response=GroupOut,
    role=Role.ADMIN,
)
async def update_group(call: Call, group_id: str, body: GroupPatchIn) -> GroupOut:
    if await call.services.storage.get_group(call.workspace_id, group_id) is None:
        raise NotFound()
    await _check_fallback(call, body.fallback_group_id, group_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    group = await call.services.storage.update_group(call.workspace_id, group_id, **changes)
    await workspace_changed(call)
    await audit(call, "group.updated", f"group:{group_id}")
    return _group_out(group)


@api.op("DELETE", "/groups/{group_id}", summary="Delete a group", response=Done, role=Role.ADMIN)
async def delete_group(call: Call, group_id: str) -> Done:
    if await call.services.storage.get_group(call.workspace_id, group_id) is None:
        raise NotFound()
    await call.services.storage.delete_group(call.workspace_id, group_id)
    await workspace_changed(call)
    await audit(call, "group.deleted", f"group:{group_id}")
    return Done()


# ---------------------------------------------------------------- canned responses


def _canned_out(c: Any) -> CannedOut:
    return CannedOut(id=c.id, shortcut=c.shortcut, text=c.text)


@api.op("GET", "/canned-responses", summary="Canned responses", response=CannedList)
async def list_canned(call: Call) -> CannedList:
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    return CannedList(canned_responses=tuple(_canned_out(c) for c in items))


@api.op(
    "POST",
    "/canned-responses",
    summary="Create a canned response",
    body=CannedIn,
    response=CannedOut,
    status=201,
    role=Role.SUPERVISOR,
)
async def create_canned(call: Call, body: CannedIn) -> CannedOut:
    await _shortcut_free(call, body.shortcut, None)
    try:
        canned = await call.services.storage.create_canned_response(
            call.workspace_id, shortcut=body.shortcut, text=body.text
        )
    except StorageConflict:
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut") from None
    await audit(call, "canned.created", f"canned:{canned.id}", shortcut=canned.shortcut)
    return _canned_out(canned)


async def _shortcut_free(call: Call, shortcut: str, own_id: str | None) -> None:
    """Shortcuts are unique per workspace, ignoring case (``/Refund`` and ``/refund`` would
    both match what an agent types)."""
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    if any(c.shortcut.lower() == shortcut.lower() and c.id != own_id for c in items):
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut")


async def _canned_exists(call: Call, canned_id: str) -> None:
    items = await call.services.storage.list_canned_responses(call.workspace_id)
    if not any(c.id == canned_id for c in items):
        raise NotFound()


@api.op(
    "PATCH",
    "/canned-responses/{canned_id}",
    summary="Edit a canned response",
    body=CannedPatchIn,
    response=CannedOut,
    role=Role.SUPERVISOR,
)
async def update_canned(call: Call, canned_id: str, body: CannedPatchIn) -> CannedOut:
    await _canned_exists(call, canned_id)
    if body.shortcut is not None:
        await _shortcut_free(call, body.shortcut, canned_id)
    changes = {k: v for k, v in attrs_dict(body).items() if v is not None}
    try:
        canned = await call.services.storage.update_canned_response(
            call.workspace_id, canned_id, **changes
        )
    except StorageConflict:
        raise Conflict("this shortcut exists", code="conflict", field="$.shortcut") from None
    await audit(call, "canned.updated", f"canned:{canned_id}", fields=sorted(changes))
    return _canned_out(canned)


@api.op(
    "DELETE",
    "/canned-responses/{canned_id}",
    summary="Delete a canned response",
    response=Done,
    role=Role.SUPERVISOR,
)
async def delete_canned(call: Call, canned_id: str) -> Done:
    await _canned_exists(call, canned_id)
    await call.services.storage.delete_canned_response(call.workspace_id, canned_id)
    await audit(call, "canned.deleted", f"canned:{canned_id}")
    return Done()


# ---------------------------------------------------------------- settings


def _settings(call: Call) -> dict[str, Any]:
    return dict(call.caller.workspace.settings)


def read_widget_settings(ws: Any) -> WidgetSettings:
    raw = dict(ws.settings.get("widget") or {})
    raw["allowed_origins"] = list(ws.allowed_origins)
    try:
        return api_converter.structure(raw, WidgetSettings)
    except (cattrs.BaseValidationError, ValueError, TypeError):
        return WidgetSettings(allowed_origins=tuple(ws.allowed_origins))


def read_routing_settings(ws: Any) -> RoutingSettings:
    try:
        return api_converter.structure(dict(ws.settings.get("routing") or {}), RoutingSettings)
    except (cattrs.BaseValidationError, ValueError, TypeError):
        return RoutingSettings()


@api.op(
    "GET", "/settings/widget", summary="Widget appearance and behaviour", response=WidgetSettings
)
async def get_widget_settings(call: Call) -> WidgetSettings:
    return read_widget_settings(call.caller.workspace)


@api.op(
    "PUT",
    "/settings/widget",
    summary="Replace the widget settings (and allowed origins): every field required",
    body=WidgetSettingsIn,
    response=WidgetSettings,
    role=Role.ADMIN,
)
async def put_widget_settings(call: Call, body: WidgetSettingsIn) -> WidgetSettings:
    """A body without a field is refused (``missing_field``), and no body or ``{}`` is
    ``body_required``: a replace never resets settings the client did not send."""
    return await _store_widget_settings(call, api_converter.unstructure(body))


@api.op(
    "PATCH",
    "/settings/widget",
    summary="Change some widget settings; the others keep their values",
    body=WidgetSettingsPatch,
    response=WidgetSettings,
    role=Role.ADMIN,
)
async def patch_widget_settings(call: Call, body: WidgetSettingsPatch) -> WidgetSettings:
    current = api_converter.unstructure(read_widget_settings(call.caller.workspace))
    changes = {k: v for k, v in api_converter.unstructure(body).items() if v is not None}
    return await _store_widget_settings(call, {**current, **changes})


async def _store_widget_settings(call: Call, data: dict[str, Any]) -> WidgetSettings:
    body = api_converter.structure(data, WidgetSettings)
    for i, origin in enumerate(body.allowed_origins):
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise BadRequest(
                "an origin is scheme://host[:port] without a path",
                code="invalid_value",
                field=f"$.allowed_origins[{i}]",
            )
    data = api_converter.unstructure(body)
    origins = tuple(data.pop("allowed_origins"))
    settings = _settings(call)
    settings["widget"] = data
    ws = await call.services.storage.update_workspace(
        call.workspace_id, settings=settings, allowed_origins=origins
    )
    await workspace_changed(call)
    await audit(call, "settings.widget_changed", f"workspace:{ws.id}")
    return read_widget_settings(ws)


@api.op("GET", "/settings/routing", summary="Routing mode and timeouts", response=RoutingSettings)
async def get_routing_settings(call: Call) -> RoutingSettings:
    return read_routing_settings(call.caller.workspace)


@api.op(
    "PUT",
    "/settings/routing",
    summary="Replace the routing settings",
    body=RoutingSettings,
    response=RoutingSettings,
    role=Role.ADMIN,
)
async def put_routing_settings(call: Call, body: RoutingSettings) -> RoutingSettings:
    if body.default_group_id is not None and (
        await call.services.storage.get_group(call.workspace_id, body.default_group_id) is None
    ):
        raise BadRequest("no such group", code="invalid_value", field="$.default_group_id")
    settings = _settings(call)
    settings["routing"] = api_converter.unstructure(body)
    ws = await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await workspace_changed(call)
    await audit(call, "settings.routing_changed", f"workspace:{ws.id}")
    return read_routing_settings(ws)


@api.op(
    "GET",
    "/settings/identity-secret",
    summary="The HMAC key your site signs visitor identities with",
    response=IdentitySecret,
    role=Role.ADMIN,
    scope="admin",  # a credential: a read-only token must not be able to forge identities
)
async def get_identity_secret(call: Call) -> IdentitySecret:
    await audit(call, "settings.identity_secret_read", f"workspace:{call.workspace_id}")
    return IdentitySecret(identity_secret=call.caller.workspace.identity_secret)


@api.op("GET", "/tags", summary="The tag catalogue", response=TagsOut)
async def get_tags(call: Call) -> TagsOut:
    tags = call.caller.workspace.settings.get("tags") or []
    return TagsOut(tags=tuple(str(t) for t in tags))


@api.op(
    "PUT",
    "/tags",
    summary="Replace the tag catalogue",
    body=TagsIn,
    response=TagsOut,
    role=Role.SUPERVISOR,
)
async def put_tags(call: Call, body: TagsIn) -> TagsOut:
    settings = _settings(call)
    before = set(settings.get("tags") or [])
    settings["tags"] = sorted(set(body.tags))
    await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await audit(
        call,
        "settings.tags_changed",
        f"workspace:{call.workspace_id}",
        added=sorted(set(settings["tags"]) - before),
        removed=sorted(before - set(settings["tags"])),
    )
    return TagsOut(tags=tuple(settings["tags"]))


# ---------------------------------------------------------------- API tokens


@api.op(
    "GET", "/tokens", summary="API tokens of the workspace", response=TokenList, role=Role.ADMIN
)
async def list_tokens(call: Call) -> TokenList:
    tokens = await call.services.storage.list_api_tokens(call.workspace_id)
    return TokenList(tokens=tuple(TokenOut.of(t) for t in tokens))


@api.op(
    "POST",
    "/tokens",
    summary="Create an API token (the secret is shown once)",
    body=CreateTokenIn,
    response=TokenCreated,
    status=201,
    role=Role.ADMIN,
)
async def create_token(call: Call, body: CreateTokenIn) -> TokenCreated:
    agent_id = body.agent_id or call.caller.agent.id
    agent = await _agent(call, agent_id)
    _may_manage(call, agent.role)
    secret = "lct_" + new_secret()
    record = await call.services.storage.create_api_token(
        call.workspace_id,
        agent_id=agent_id,
        name=body.name,
        token_hash=hash_secret(secret),
        scopes=tuple(dict.fromkeys(body.scopes)) or ("admin",),
    )
    await audit(call, "token.created", f"token:{record.id}", scopes=list(record.scopes))
    return TokenCreated(token=secret, info=TokenOut.of(record))


@api.op(
    "DELETE", "/tokens/{token_id}", summary="Revoke an API token", response=Done, role=Role.ADMIN
)
async def revoke_token(call: Call, token_id: str) -> Done:
    tokens = await call.services.storage.list_api_tokens(call.workspace_id)
    token = next((t for t in tokens if t.id == token_id), None)
    if token is None:
        raise NotFound()
    await call.services.storage.revoke_api_token(call.workspace_id, token_id)
    for sock in call.services.sockets.of_workspace(call.workspace_id):
        if sock.token_id == token_id:
            sock.close(CloseCode.POLICY, "token revoked")
    await audit(call, "token.revoked", f"token:{token_id}")
    return Done()


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
