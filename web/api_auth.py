"""Login, logout, password change and ``/me``.

Login is throttled per IP and per account (exponential backoff, never a permanent lockout) and
answers the same ``bad_credentials`` for an unknown user, a wrong password and a disabled
account, after the same argon2 work. Password change and logout end the account's other
sessions and close their live sockets.
"""

from __future__ import annotations

import math

from quart import Response

from storage import Role, WorkspaceStatus
from web.auth import (
    cookie_is_secure,
    hash_secret,
    session_cookie_name,
    start_session,
)
from web.errors import Forbidden, Overloaded, TooManyRequests, Unauthorized
from web.httpapi import ApiBlueprint, Call, PublicCall, json_response
from web.protocol import CloseCode
from web.schemas import AgentOut, ChangePasswordIn, Done, LoginIn, Me, WorkspaceOut

api = ApiBlueprint("api_auth", "auth")


@api.op(
    "POST",
    "/auth/login",
    summary="Log in with username and password; sets the session cookie (__Host-lc_session "
    "over TLS, lc_session over plain HTTP)",
    body=LoginIn,
    response=Me,
    auth=False,
)
async def login(call: PublicCall, body: LoginIn) -> Response:
    from quart import request

    services = call.services
    storage = services.storage
    account = body.username.strip().lower()
    wait = services.login_throttle.check(account=account, ip=call.ip)
    if wait > 0:
        services.metrics.logins["throttled"] += 1
        raise TooManyRequests(
            "too many failed logins; try again later",
            retry_after_s=wait,
            code="login_throttled",
        )
    try:
        services.hasher.admit()  # a full hashing queue: 503 at once, before any other work
    except Overloaded:
        services.metrics.logins["overloaded"] += 1
        raise
    agent = await storage.find_agent_by_username(account)
    ok = await services.hasher.verify(agent.password_hash if agent else None, body.password)
    workspace = await storage.get_workspace(agent.workspace_id) if agent else None
    bot = agent is not None and agent.role is Role.BOT  # bots use API tokens, never sessions
    if not ok or agent is None or bot or not agent.enabled or workspace is None:
        services.login_throttle.failed(account=account, ip=call.ip)
        services.metrics.logins["failed"] += 1
        await storage.audit(
            agent.workspace_id if agent else None,
            actor="anonymous",
            action="login.failed",
            target=f"agent:{agent.id}" if agent else None,
            details={"reason": "bad_credentials"},
            ip=call.ip,
        )
        raise Unauthorized("wrong username or password", code="bad_credentials")
    if workspace.status is not WorkspaceStatus.ACTIVE:
        raise Forbidden("the workspace is suspended", code="workspace_suspended")
    services.login_throttle.succeeded(account=account)
    services.metrics.logins["ok"] += 1
    # No fixation: a session cookie sent with the login is destroyed; a fresh id is minted.
    old = request.cookies.get(session_cookie_name(services.settings))
    if old:
        await storage.delete_session(hash_secret(old))
    cookie, session = await start_session(services, agent)
    await storage.audit(workspace.id, actor=f"agent:{agent.id}", action="login.success", ip=call.ip)
    me = Me(
        agent=AgentOut.of(agent),
        workspace=WorkspaceOut.of(workspace),
        csrf_token=session.csrf_token,
        auth="session",
        server_operator=bool(workspace.settings.get("server_operator"))
        and agent.role.value == "owner",
    )
    response = json_response(me)
    # Secure, Path=/ and no Domain: what the __Host- prefix requires over TLS.
    response.set_cookie(
        session_cookie_name(services.settings),
        cookie,
        max_age=math.ceil(services.settings.session_absolute_timeout_s),
        path="/",
        httponly=True,
        secure=cookie_is_secure(services.settings),
        samesite="Lax",
    )
    return response


@api.op(
    "POST",
    "/auth/logout",
    summary="End this session and close its live sockets",
    response=Done,
)
async def logout(call: Call) -> Response:
    services = call.services
    session = call.caller.session
    if session is not None:
        await services.storage.delete_session(session.id_hash)
        for sock in services.sockets.of_session(session.id_hash):
            sock.close(CloseCode.POLICY, "logged out")
    await services.storage.audit(
        call.workspace_id, actor=call.caller.actor, action="logout", ip=call.ip
    )
    response = json_response(Done())
    secure = cookie_is_secure(services.settings)
    response.delete_cookie(session_cookie_name(services.settings), path="/", secure=secure)
    return response


@api.op(
    "POST",
    "/auth/password",
    summary="Change your password; ends your other sessions and closes their sockets",
    body=ChangePasswordIn,
    response=Done,
)
async def change_password(call: Call, body: ChangePasswordIn) -> Done:
    services = call.services
    agent = call.caller.agent
    if not await services.hasher.verify(agent.password_hash, body.current_password):
        await services.storage.audit(
            call.workspace_id,
            actor=call.caller.actor,
            action="password.change_failed",
            target=f"agent:{agent.id}",
            ip=call.ip,
        )
        raise Forbidden("the current password is wrong", code="bad_credentials")
    import time

    new_hash = await services.hasher.hash(body.new_password)
    await services.storage.update_agent(
        call.workspace_id, agent.id, password_hash=new_hash, password_changed_at=time.time()
    )
    keep = call.caller.session.id_hash if call.caller.session else None
    await end_other_sessions(call, agent.id, keep_session=keep, reason="password changed")
    await services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="password.changed",
        target=f"agent:{agent.id}",
        ip=call.ip,
    )
    return Done()


async def end_other_sessions(
    call: Call, agent_id: str, *, keep_session: str | None, reason: str
) -> None:
    """Delete the agent's sessions (but ``keep_session``) and close their sockets now."""
    services = call.services
    await services.storage.delete_agent_sessions(agent_id, except_id_hash=keep_session)
    for sock in services.sockets.of_agent(call.workspace_id, agent_id):
        if keep_session is None or sock.session_hash != keep_session:
            sock.close(CloseCode.POLICY, reason)


@api.op("GET", "/me", summary="The caller's account and workspace", response=Me)
async def me(call: Call) -> Me:
    caller = call.caller
    return Me(
        agent=AgentOut.of(caller.agent),
        workspace=WorkspaceOut.of(caller.workspace),
        csrf_token=caller.session.csrf_token if caller.session else None,
        auth="session" if caller.session else "token",
        server_operator=caller.server_operator,
    )
