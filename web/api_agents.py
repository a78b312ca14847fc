"""Agents of a workspace and their API tokens: list, create, change, disable, reset a
password; create and revoke tokens (a token acts as its agent, its secret is shown once and
stored as a hash).

A caller manages only roles below their own (an owner: every role). Role changes, disabling,
password resets and tokens are audited; disabling an agent ends their sessions and sockets.
"""

from __future__ import annotations

import time
from typing import Any

from storage import Conflict as StorageConflict
from storage import Role
from web.api_admin import attrs_dict, audit, workspace_changed
from web.api_auth import end_other_sessions
from web.auth import hash_secret, new_secret
from web.errors import BadRequest, Conflict, Forbidden, NotFound
from web.httpapi import ROLE_RANK, ApiBlueprint, Call
from web.passwords import generate_password
from web.protocol import CloseCode
from web.schemas import AgentList, AgentOut, Done
from web.schemas_admin import (
    AgentCreated,
    CreateAgentIn,
    CreateTokenIn,
    PasswordOut,
    TokenCreated,
    TokenList,
    TokenOut,
    UpdateAgentIn,
)

api = ApiBlueprint("api_agents", "admin")


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
        await call.services.access.close_agent(
            call.workspace_id, agent_id, "role changed", code=CloseCode.PRIVILEGES_CHANGED
        )
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
    await call.services.access.close_token(token_id, "token revoked")
    await audit(call, "token.revoked", f"token:{token_id}")
    return Done()
