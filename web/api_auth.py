"""Login, logout, password change and ``/me``.

Login is throttled per IP and per account (exponential backoff, never a permanent lockout) and
answers the same ``bad_credentials`` for an unknown user, a wrong password and a disabled
account, after the same argon2 work. Password change and logout end the account's other
sessions and close their live sockets.
"""

from __future__ import annotations

import math
from typing import Literal

from quart import Response

from storage import Agent, Role, Session, Workspace, WorkspaceStatus
from web.auth import (
    cookie_is_secure,
    hash_secret,
    session_cookie_name,
    start_session,
)
from web.errors import Forbidden, Overloaded, TooManyRequests, Unauthorized
from web.httpapi import ApiBlueprint, Call, PublicCall, json_response
from web.schemas import AgentOut, ChangePasswordIn, Done, LoginIn, Me, WorkspaceOut
from web.schemas_security import SecondFactorRequired
from web.services import Services
from web.twofactor import must_use_2fa

api = ApiBlueprint("api_auth", "auth")
PENDING_LOGIN = "login-2fa"  # purpose of the signed token between password and second factor


@api.op(
    "POST",
    "/auth/login",
    summary="Log in with username and password; sets the session cookie (__Host-lc_session "
    "over TLS, lc_session over plain HTTP)",
    description="With two-factor login enabled for the account (or required by the workspace) "
    "the answer is instead a SecondFactorRequired body, without a session: send its "
    "pending_token with a code to /auth/login/2fa, or enroll first (/auth/2fa/enroll).",
    body=LoginIn,
    response=Me,
    auth=False,
)
async def login(call: PublicCall, body: LoginIn) -> Response:
    services = call.services
    storage = services.storage
    account = body.username.strip().lower()
    wait = await services.login_throttle.check(account=account, ip=call.ip)
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
        await services.login_throttle.failed(account=account, ip=call.ip)
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
    await refuse_if_sso_only(services, agent, workspace)
    challenge = await second_factor_challenge(services, agent, workspace)
    if challenge is not None:
        # No session yet, and the throttle is not reset: guessing the code costs like
        # guessing a password, however often the password step is repeated.
        await storage.audit(
            workspace.id,
            actor=f"agent:{agent.id}",
            action="login.password_ok",
            details={"second_factor": challenge.second_factor},
            ip=call.ip,
        )
        return json_response(challenge)
    return await finish_login(services, agent, workspace, ip=call.ip, method="password")


async def refuse_if_sso_only(services: Services, agent: Agent, workspace: Workspace) -> None:
    """A workspace that signs in with SSO only refuses passwords, except its owners' (so that
    an identity-provider outage cannot lock the workspace out)."""
    config = await services.storage.get_sso_config(workspace.id)
    if config is not None and config.enabled and config.sso_only and agent.role is not Role.OWNER:
        raise Forbidden("this workspace signs in with SSO only", code="sso_required")


async def second_factor_challenge(
    services: Services, agent: Agent, workspace: Workspace
) -> SecondFactorRequired | None:
    """What a password login must still do: a code, enrollment (policy), or nothing."""
    enrolled = await services.storage.get_two_factor(workspace.id, agent.id)
    if enrolled is not None and enrolled.confirmed_at is not None:
        kind: Literal["totp", "enroll"] = "totp"
    elif must_use_2fa(workspace, agent):
        kind = "enroll"
    else:
        return None
    ttl_s = services.settings.accounts.login_second_factor_ttl_s
    token = services.flows.sign(
        PENDING_LOGIN,
        {"a": agent.id, "w": workspace.id, "pc": agent.password_changed_at, "k": kind},
        ttl_s=ttl_s,
    )
    return SecondFactorRequired(second_factor=kind, pending_token=token, expires_in_s=ttl_s)


def me_of(agent: Agent, workspace: Workspace, csrf_token: str | None, auth: str) -> Me:
    return Me(
        agent=AgentOut.of(agent),
        workspace=WorkspaceOut.of(workspace),
        csrf_token=csrf_token,
        auth="session" if auth == "session" else "token",
        server_operator=bool(workspace.settings.get("server_operator"))
        and agent.role.value == "owner",
    )


async def open_session(
    services: Services, agent: Agent, workspace: Workspace, *, ip: str, method: str
) -> tuple[str, Session]:
    """A fresh session after a complete login (the throttle forgets the account's failures);
    a session cookie sent with the login is destroyed first (no fixation)."""
    from quart import request

    await services.login_throttle.succeeded(account=agent.username)
    services.metrics.logins["ok"] += 1
    old = request.cookies.get(session_cookie_name(services.settings))
    if old:
        await services.storage.delete_session(hash_secret(old))
    cookie, session = await start_session(services, agent)
    details = {} if method == "password" else {"method": method}
    await services.storage.audit(
        workspace.id, actor=f"agent:{agent.id}", action="login.success", details=details, ip=ip
    )
    return cookie, session


def set_session_cookie(response: Response, services: Services, cookie: str) -> None:
    # Secure, Path=/ and no Domain: what the __Host- prefix requires over TLS.
    response.set_cookie(
        session_cookie_name(services.settings),
        cookie,
        max_age=math.ceil(services.settings.accounts.session_absolute_timeout_s),
        path="/",
        httponly=True,
        secure=cookie_is_secure(services.settings),
        samesite="Lax",
    )


async def finish_login(
    services: Services, agent: Agent, workspace: Workspace, *, ip: str, method: str
) -> Response:
    """Open the session, answer ``Me`` and set the session cookie."""
    cookie, session = await open_session(services, agent, workspace, ip=ip, method=method)
    response = json_response(me_of(agent, workspace, session.csrf_token, "session"))
    set_session_cookie(response, services, cookie)
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
        await services.access.close_session(session.id_hash, "logged out")
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
    await services.access.close_agent(
        call.workspace_id, agent_id, reason, keep_session=keep_session
    )


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
