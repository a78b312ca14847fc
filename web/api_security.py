"""Two-factor login and single sign-on over HTTP (docs/security.md, docs/admin-api.md).

Two-factor: the second login step (``/auth/login/2fa``), enrollment forced by the workspace
policy before the first session (``/auth/2fa/enroll``), enrollment and recovery codes for a
logged-in agent (``/me/2fa/...``), the workspace policy and the admin reset.

Single sign-on: the admin configuration (``/settings/sso``), and the browser flow
``/auth/sso/{slug}/start`` → identity provider → ``/auth/sso/callback`` → ``/console``. The
OIDC state, nonce and PKCE verifier travel in a signed, short-lived, HttpOnly cookie; errors
of the browser flow come back to the console as ``/console?sso_error=<code>``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from quart import Response, request

from storage import Agent, Role, SsoConfig, TwoFactor, Workspace, WorkspaceStatus
from storage import Conflict as StorageConflict
from web.api_auth import (
    PENDING_LOGIN,
    end_other_sessions,
    finish_login,
    open_session,
    set_session_cookie,
)
from web.auth import cookie_is_secure
from web.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests, Unauthorized
from web.httpapi import (
    API_PREFIX,
    ROLE_RANK,
    SESSION_ONLY,
    ApiBlueprint,
    Call,
    PublicCall,
    json_response,
)
from web.oidc import OidcError, issuer_problem
from web.schemas import Done, Me
from web.schemas_security import (
    CodeIn,
    EnrollmentOut,
    PendingIn,
    RecoveryCodesOut,
    SecondFactorIn,
    SecurityOverview,
    SecuritySettings,
    SsoConfigIn,
    SsoConfigOut,
    TwoFactorStatus,
)
from web.services import Services
from web.twofactor import (
    REQUIRE_2FA_KEY,
    is_totp_code,
    must_use_2fa,
    new_recovery_codes,
    new_totp_secret,
    provisioning_uri,
    qr_svg_data_uri,
    recovery_hash,
    require_2fa,
    totp_step,
)

api = ApiBlueprint("api_security", "security")
SSO_FLOW = "sso"  # purpose of the signed cookie between /auth/sso/.../start and the callback
SSO_COOKIE = "lc_sso"
SECURE_SSO_COOKIE = "__Host-lc_sso"
SSO_FLOW_TTL_S = 600.0
CALLBACK_PATH = "/auth/sso/callback"


# ---------------------------------------------------------------- helpers


async def _pending(services: Services, token: str) -> tuple[Agent, Workspace]:
    """The agent and workspace of a valid pending-login token (401 ``login_expired``)."""
    data = services.flows.verify(PENDING_LOGIN, token)
    expired = Unauthorized(
        "the login step has expired or is not valid; log in again", code="login_expired"
    )
    agent = await services.storage.get_agent(str(data.get("w")), str(data.get("a")))
    workspace = await services.storage.get_workspace(str(data.get("w")))
    if agent is None or workspace is None or not agent.enabled:
        raise expired
    if agent.password_changed_at != data.get("pc"):
        raise expired  # the password changed (or was reset) since: start again
    if workspace.status is not WorkspaceStatus.ACTIVE:
        raise Forbidden("the workspace is suspended", code="workspace_suspended")
    return agent, workspace


async def _check_throttle(services: Services, account: str, ip: str) -> None:
    wait = await services.login_throttle.check(account=account, ip=ip)
    if wait > 0:
        services.metrics.logins["throttled"] += 1
        raise TooManyRequests(
            "too many failed logins; try again later", retry_after_s=wait, code="login_throttled"
        )


async def _wrong_code(services: Services, agent: Agent, ip: str, action: str) -> Unauthorized:
    await services.login_throttle.failed(account=agent.username, ip=ip)
    services.metrics.logins["failed"] += 1
    await services.storage.audit(
        agent.workspace_id,
        actor="anonymous" if action == "login.failed" else f"agent:{agent.id}",
        action=action,
        target=f"agent:{agent.id}",
        details={"reason": "bad_second_factor"},
        ip=ip,
    )
    return Unauthorized("the code is wrong or was already used", code="bad_second_factor")


async def _check_code(services: Services, record: TwoFactor, code: str) -> str | None:
    """Spend ``code`` (TOTP or recovery); the method used, or None if it is not valid."""
    storage = services.storage
    if is_totp_code(code):
        step = totp_step(record.totp_secret, code)
        if step is not None and await storage.use_totp_step(
            record.workspace_id, record.agent_id, step
        ):
            return "totp"
        return None
    if await storage.use_recovery_code(record.workspace_id, record.agent_id, recovery_hash(code)):
        return "recovery_code"
    return None


async def _start_enrollment(
    services: Services, agent: Agent, workspace: Workspace
) -> EnrollmentOut:
    existing = await services.storage.get_two_factor(workspace.id, agent.id)
    if existing is not None and existing.confirmed_at is not None:
        raise Conflict("two-factor login is already enabled", code="two_factor_enabled")
    secret = new_totp_secret()
    await services.storage.put_two_factor(
        TwoFactor(
            agent_id=agent.id, workspace_id=workspace.id, totp_secret=secret, created_at=time.time()
        )
    )
    uri = provisioning_uri(secret, account=agent.username, issuer=f"livechat {workspace.name}")
    return EnrollmentOut(secret=secret, otpauth_uri=uri, qr_svg=qr_svg_data_uri(uri))


async def _confirm_enrollment(
    services: Services, agent: Agent, workspace: Workspace, code: str, ip: str
) -> list[str]:
    record = await services.storage.get_two_factor(workspace.id, agent.id)
    if record is None:
        raise Conflict("start the enrollment first", code="two_factor_not_started")
    if record.confirmed_at is not None:
        raise Conflict("two-factor login is already enabled", code="two_factor_enabled")
    step = totp_step(record.totp_secret, code)
    if step is None:
        raise await _wrong_code(services, agent, ip, "2fa.enroll_failed")
    codes = new_recovery_codes()
    await services.storage.confirm_two_factor(
        workspace.id, agent.id, step=step, recovery_hashes=[recovery_hash(c) for c in codes]
    )
    await services.storage.audit(
        workspace.id, actor=f"agent:{agent.id}", action="2fa.enabled", ip=ip
    )
    return codes


# ---------------------------------------------------------------- login steps


@api.op(
    "POST",
    "/auth/login/2fa",
    summary="Second login step: a TOTP code or a recovery code; sets the session cookie",
    body=SecondFactorIn,
    response=Me,
    auth=False,
    description="Throttled with the password step (per account and IP). Answers Me, like "
    "/auth/login. A recovery code works once.",
)
async def login_second_factor(call: PublicCall, body: SecondFactorIn) -> Response:
    services = call.services
    agent, workspace = await _pending(services, body.pending_token)
    await _check_throttle(services, agent.username, call.ip)
    record = await services.storage.get_two_factor(workspace.id, agent.id)
    if record is None or record.confirmed_at is None:
        raise Conflict("two-factor login is not enabled; enroll first", code="two_factor_not_set")
    method = await _check_code(services, record, body.code)
    if method is None:
        raise await _wrong_code(services, agent, call.ip, "login.failed")
    if method == "recovery_code":
        await services.storage.audit(
            workspace.id,
            actor=f"agent:{agent.id}",
            action="2fa.recovery_code_used",
            target=f"agent:{agent.id}",
            ip=call.ip,
        )
    return await finish_login(services, agent, workspace, ip=call.ip, method=method)


@api.op(
    "POST",
    "/auth/2fa/enroll",
    summary="Enroll in two-factor login during a login the workspace policy holds back",
    body=PendingIn,
    response=EnrollmentOut,
    auth=False,
)
async def enroll_pending(call: PublicCall, body: PendingIn) -> EnrollmentOut:
    agent, workspace = await _pending(call.services, body.pending_token)
    return await _start_enrollment(call.services, agent, workspace)


@api.op(
    "POST",
    "/auth/2fa/enroll/confirm",
    summary="Confirm that enrollment with a code: answers the recovery codes and sets the "
    "session cookie",
    body=SecondFactorIn,
    response=RecoveryCodesOut,
    auth=False,
)
async def confirm_pending(call: PublicCall, body: SecondFactorIn) -> Response:
    services = call.services
    agent, workspace = await _pending(services, body.pending_token)
    await _check_throttle(services, agent.username, call.ip)
    codes = await _confirm_enrollment(services, agent, workspace, body.code, call.ip)
    cookie, _ = await open_session(services, agent, workspace, ip=call.ip, method="totp")
    response = json_response(RecoveryCodesOut(recovery_codes=tuple(codes)))
    set_session_cookie(response, services, cookie)
    return response


# ---------------------------------------------------------------- your own account


@api.op("GET", "/me/2fa", summary="Your two-factor login status", response=TwoFactorStatus)
async def my_two_factor(call: Call) -> TwoFactorStatus:
    caller = call.caller
    record = await call.services.storage.get_two_factor(call.workspace_id, caller.agent.id)
    enabled = record is not None and record.confirmed_at is not None
    return TwoFactorStatus(
        enabled=enabled,
        recovery_codes_left=len(record.recovery_hashes) if record and enabled else 0,
        required=must_use_2fa(caller.workspace, caller.agent),
    )


def _session_only(call: Call) -> None:
    if call.caller.session is None:
        raise Forbidden("log in to the console for this (not an API token)", code="forbidden")


@api.op(
    "POST",
    "/me/2fa/enroll",
    scope=SESSION_ONLY,  # not an API token: a stolen token must not change the factor
    summary="Start enrolling: a new TOTP secret and its QR code",
    response=EnrollmentOut,
)
async def enroll(call: Call) -> EnrollmentOut:
    _session_only(call)
    return await _start_enrollment(call.services, call.caller.agent, call.caller.workspace)


@api.op(
    "POST",
    "/me/2fa/confirm",
    scope=SESSION_ONLY,  # not an API token: a stolen token must not change the factor
    summary="Finish enrolling with a code from the app: answers the recovery codes (once)",
    body=CodeIn,
    response=RecoveryCodesOut,
)
async def confirm(call: Call, body: CodeIn) -> RecoveryCodesOut:
    _session_only(call)
    services = call.services
    await _check_throttle(services, call.caller.agent.username, call.ip)
    codes = await _confirm_enrollment(
        services, call.caller.agent, call.caller.workspace, body.code, call.ip
    )
    return RecoveryCodesOut(recovery_codes=tuple(codes))


async def _enrolled_and_code(call: Call, code: str, action: str) -> TwoFactor:
    services = call.services
    agent = call.caller.agent
    await _check_throttle(services, agent.username, call.ip)
    record = await services.storage.get_two_factor(call.workspace_id, agent.id)
    if record is None or record.confirmed_at is None:
        raise Conflict("two-factor login is not enabled", code="two_factor_not_set")
    if await _check_code(services, record, code) is None:
        raise await _wrong_code(services, agent, call.ip, action)
    return record


@api.op(
    "POST",
    "/me/2fa/recovery-codes",
    scope=SESSION_ONLY,  # not an API token: a stolen token must not change the factor
    summary="Replace your recovery codes (needs a current code); the old ones stop working",
    body=CodeIn,
    response=RecoveryCodesOut,
)
async def new_codes(call: Call, body: CodeIn) -> RecoveryCodesOut:
    _session_only(call)
    await _enrolled_and_code(call, body.code, "2fa.recovery_codes_failed")
    codes = new_recovery_codes()
    agent_id = call.caller.agent.id
    await call.services.storage.set_recovery_codes(
        call.workspace_id, agent_id, [recovery_hash(c) for c in codes]
    )
    await call.services.storage.audit(
        call.workspace_id, actor=call.caller.actor, action="2fa.recovery_codes_renewed", ip=call.ip
    )
    return RecoveryCodesOut(recovery_codes=tuple(codes))


@api.op(
    "POST",
    "/me/2fa/disable",
    scope=SESSION_ONLY,  # not an API token: a stolen token must not change the factor
    summary="Turn two-factor login off (needs a current code); refused if the workspace "
    "requires it",
    body=CodeIn,
    response=Done,
)
async def disable(call: Call, body: CodeIn) -> Done:
    _session_only(call)
    if must_use_2fa(call.caller.workspace, call.caller.agent):
        raise Forbidden("the workspace requires two-factor login", code="two_factor_required")
    await _enrolled_and_code(call, body.code, "2fa.disable_failed")
    await call.services.storage.delete_two_factor(call.workspace_id, call.caller.agent.id)
    await call.services.storage.audit(
        call.workspace_id, actor=call.caller.actor, action="2fa.disabled", ip=call.ip
    )
    return Done()


# ---------------------------------------------------------------- administration


@api.op(
    "POST",
    "/agents/{agent_id}/2fa/reset",
    summary="Remove an agent's two-factor enrollment (lost phone); ends the agent's sessions",
    response=Done,
    role=Role.ADMIN,
)
async def reset_two_factor(call: Call, agent_id: str) -> Done:
    storage = call.services.storage
    agent = await storage.get_agent(call.workspace_id, agent_id)
    if agent is None:
        raise NotFound()
    if ROLE_RANK[agent.role] > ROLE_RANK[call.caller.agent.role]:
        raise Forbidden("you cannot grant or manage a role above your own")
    had = await storage.delete_two_factor(call.workspace_id, agent_id)
    await end_other_sessions(call, agent_id, keep_session=None, reason="two-factor reset")
    await storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="agent.2fa_reset",
        target=f"agent:{agent_id}",
        details={"was_enabled": had},
        ip=call.ip,
    )
    return Done()


async def _overview(call: Call, workspace: Workspace) -> SecurityOverview:
    records = await call.services.storage.list_two_factor(workspace.id)
    return SecurityOverview(
        require_2fa=require_2fa(workspace),
        two_factor_agent_ids=tuple(
            sorted(r.agent_id for r in records if r.confirmed_at is not None)
        ),
    )


@api.op(
    "GET",
    "/settings/security",
    summary="The two-factor policy and who has enrolled",
    response=SecurityOverview,
    role=Role.ADMIN,
)
async def get_security(call: Call) -> SecurityOverview:
    return await _overview(call, call.caller.workspace)


@api.op(
    "PUT",
    "/settings/security",
    summary="Set who must log in with two factors (none, admins, all); applies at next login",
    body=SecuritySettings,
    response=SecurityOverview,
    role=Role.ADMIN,
)
async def put_security(call: Call, body: SecuritySettings) -> SecurityOverview:
    settings = dict(call.caller.workspace.settings)
    old = require_2fa(call.caller.workspace)
    settings[REQUIRE_2FA_KEY] = body.require_2fa
    ws = await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await call.services.access.workspace_updated(ws.id)
    await call.services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="settings.security_changed",
        target=f"workspace:{ws.id}",
        details={"require_2fa": body.require_2fa, "old": old},
        ip=call.ip,
    )
    return await _overview(call, ws)


def _sso_out(services: Services, config: SsoConfig) -> SsoConfigOut:
    base = services.settings.server.base_url
    return SsoConfigOut(
        slug=config.slug,
        issuer=config.issuer,
        client_id=config.client_id,
        has_client_secret=bool(config.client_secret),
        role_claim=config.role_claim,
        role_map={k: Role(v) for k, v in config.role_map.items()},
        default_role=config.default_role,
        sso_only=config.sso_only,
        enabled=config.enabled,
        redirect_uri=base + API_PREFIX + CALLBACK_PATH,
        login_url=f"{base}{API_PREFIX}/auth/sso/{config.slug}/start",
    )


@api.op(
    "GET",
    "/settings/sso",
    summary="The workspace's OpenID Connect sign-in (the client secret is never shown)",
    response=SsoConfigOut,
    role=Role.ADMIN,
)
async def get_sso(call: Call) -> SsoConfigOut:
    config = await call.services.storage.get_sso_config(call.workspace_id)
    if config is None:
        raise NotFound("single sign-on is not configured")
    return _sso_out(call.services, config)


@api.op(
    "PUT",
    "/settings/sso",
    summary="Configure OpenID Connect sign-in: issuer, client, role mapping, SSO only",
    body=SsoConfigIn,
    response=SsoConfigOut,
    role=Role.ADMIN,
)
async def put_sso(call: Call, body: SsoConfigIn) -> SsoConfigOut:
    services = call.services
    problem = issuer_problem(
        body.issuer, allow_http_loopback=services.settings.sso.allow_http_loopback
    )
    if problem is not None:
        raise BadRequest(f"issuer: {problem}", code="invalid_value", field="$.issuer")
    role_map = {k: Role(v) for k, v in body.role_map.items()}  # checked by SsoConfigIn
    for claim_value, role in role_map.items():
        if ROLE_RANK[role] > ROLE_RANK[call.caller.agent.role]:
            raise Forbidden(
                f"the mapping of {claim_value!r} grants a role above your own", code="forbidden"
            )
    if body.default_role is not None and ROLE_RANK[body.default_role] > ROLE_RANK[Role.ADMIN]:
        raise BadRequest(
            "the default role cannot be owner", code="invalid_value", field="$.default_role"
        )
    old = await services.storage.get_sso_config(call.workspace_id)
    secret = body.client_secret or (old.client_secret if old is not None else None)
    if secret is None:
        raise BadRequest(
            "client_secret is required the first time",
            code="missing_field",
            field="$.client_secret",
        )
    config = SsoConfig(
        workspace_id=call.workspace_id,
        slug=body.slug.lower(),
        issuer=body.issuer,
        client_id=body.client_id,
        client_secret=secret,
        role_claim=body.role_claim,
        role_map={k: v.value for k, v in role_map.items()},
        default_role=body.default_role,
        sso_only=body.sso_only,
        enabled=body.enabled,
        updated_at=time.time(),
    )
    try:
        await services.storage.put_sso_config(config)
    except StorageConflict:
        raise Conflict("this SSO name is taken", code="slug_taken", field="$.slug") from None
    await services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action="sso.configured",
        target=f"workspace:{call.workspace_id}",
        details={
            "issuer": config.issuer,
            "client_id": config.client_id,
            "secret_changed": body.client_secret is not None,
            "sso_only": config.sso_only,
            "enabled": config.enabled,
        },
        ip=call.ip,
    )
    return _sso_out(services, config)


@api.op(
    "DELETE",
    "/settings/sso",
    summary="Remove the OpenID Connect sign-in (linked agents keep their accounts)",
    response=Done,
    role=Role.ADMIN,
)
async def delete_sso(call: Call) -> Done:
    await call.services.storage.delete_sso_config(call.workspace_id)
    await call.services.storage.audit(
        call.workspace_id, actor=call.caller.actor, action="sso.removed", ip=call.ip
    )
    return Done()


# ---------------------------------------------------------------- the browser flow


def _sso_cookie_name(services: Services) -> str:
    return SECURE_SSO_COOKIE if cookie_is_secure(services.settings) else SSO_COOKIE


def _redirect(location: str) -> Response:
    return Response(b"", status=302, headers={"Location": location})


def _back_to_console(error: str | None = None) -> Response:
    return _redirect("/console" + (f"?sso_error={quote(error)}" if error else ""))


@api.op(
    "GET",
    "/auth/sso/{slug}/start",
    summary="Sign in with SSO: redirects to the workspace's identity provider",
    status=302,
    auth=False,
)
async def sso_start(call: PublicCall, slug: str) -> Response:
    services = call.services
    config = await services.storage.find_sso_config(slug.lower()[:40])
    if config is None or not config.enabled:
        return _back_to_console("sso_unknown")
    redirect_uri = services.settings.server.base_url + API_PREFIX + CALLBACK_PATH
    try:
        auth = await services.oidc.begin(config, redirect_uri)
    except OidcError as err:
        return _back_to_console(err.code)
    flow = services.flows.sign(
        SSO_FLOW,
        {"w": config.workspace_id, "s": auth.state, "n": auth.nonce, "v": auth.code_verifier},
        ttl_s=SSO_FLOW_TTL_S,
    )
    response = _redirect(auth.url)
    response.set_cookie(
        _sso_cookie_name(services),
        flow,
        max_age=int(SSO_FLOW_TTL_S),
        path="/",
        httponly=True,
        secure=cookie_is_secure(services.settings),
        samesite="Lax",  # sent on the provider's top-level redirect back to us
    )
    return response


def _claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def mapped_role(config: SsoConfig, claims: Mapping[str, Any]) -> Role | None:
    """The highest role any of the user's claim values maps to, else the default role."""
    best: Role | None = None
    for value in _claim_values(claims, config.role_claim):
        name = config.role_map.get(value)
        if name is None:
            continue
        role = Role(name)
        if best is None or ROLE_RANK[role] > ROLE_RANK[best]:
            best = role
    return best if best is not None else config.default_role


def _username_for(config: SsoConfig, claims: Mapping[str, Any]) -> str:
    raw = ""
    for key in ("preferred_username", "email", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            raw = value.strip()
            break
    local = re.sub(r"[^a-z0-9_.@-]", "-", raw.lower())[:40] or "user"
    return f"{config.slug}.{local}"


async def _jit_agent(
    services: Services, config: SsoConfig, claims: Mapping[str, Any], role: Role
) -> Agent:
    storage = services.storage
    workspace = await storage.get_workspace(config.workspace_id)
    if workspace is None:
        raise OidcError("the workspace is gone", code="sso_unknown")
    if len(await storage.list_agents(workspace.id)) >= workspace.agent_seats:
        raise OidcError("all agent seats are taken", code="seats_exhausted")
    display = next(
        (
            str(claims[k]).strip()[:200]
            for k in ("name", "preferred_username", "email")
            if isinstance(claims.get(k), str) and str(claims[k]).strip()
        ),
        "SSO user",
    )
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    username = _username_for(config, claims)
    for attempt in range(5):
        candidate = username if attempt == 0 else f"{username}-{secrets.token_hex(2)}"
        try:
            agent = await storage.create_agent(
                workspace.id,
                username=candidate[:64],
                display_name=display,
                email=email[:320] if email else None,
                role=role,
                password_hash=None,  # signs in through the provider only
            )
            break
        except StorageConflict:
            continue
    else:
        raise OidcError("no free username for this account", code="sso_denied")
    subject = str(claims["sub"])
    try:
        await storage.create_sso_identity(
            workspace.id, issuer=config.issuer, subject=subject, agent_id=agent.id
        )
    except StorageConflict:
        # A concurrent first sign-in of the same subject linked its agent first: use that one
        # and retire the duplicate made here (disabled, so it signs nobody in).
        await storage.update_agent(workspace.id, agent.id, enabled=False)
        winner = await storage.find_sso_identity(workspace.id, config.issuer, subject)
        found = await storage.get_agent(workspace.id, winner.agent_id) if winner else None
        if found is None:
            raise OidcError("the sign-in raced another one; try again", code="sso_denied") from None
        return found
    await storage.audit(
        workspace.id,
        actor=f"sso:{config.slug}",
        action="agent.created",
        target=f"agent:{agent.id}",
        details={"role": role.value, "via": "sso"},
    )
    await services.access.workspace_changed(workspace.id)
    return agent


async def _sso_agent(
    services: Services, config: SsoConfig, claims: Mapping[str, Any]
) -> tuple[Agent, Workspace]:
    storage = services.storage
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise OidcError("the identity provider sent no subject", code="sso_invalid_token")
    role = mapped_role(config, claims)
    identity = await storage.find_sso_identity(config.workspace_id, config.issuer, subject)
    if identity is None:
        if role is None:
            raise OidcError("your account has no role in this workspace", code="sso_no_role")
        agent = await _jit_agent(services, config, claims, role)
    else:
        found = await storage.get_agent(config.workspace_id, identity.agent_id)
        if found is None or not found.enabled:
            raise OidcError("this account is disabled", code="account_disabled")
        agent = found
        if role is None:
            raise OidcError("your account has no role in this workspace", code="sso_no_role")
        if role is not agent.role and agent.role is not Role.OWNER:
            # The provider is the source of truth for roles of the accounts it signs in.
            agent = await storage.update_agent(config.workspace_id, agent.id, role=role)
            await storage.audit(
                config.workspace_id,
                actor=f"sso:{config.slug}",
                action="agent.role_changed",
                target=f"agent:{agent.id}",
                details={"old": found.role.value, "new": role.value},
            )
            await services.access.workspace_changed(config.workspace_id)
    workspace = await storage.get_workspace(config.workspace_id)
    if workspace is None or workspace.status is not WorkspaceStatus.ACTIVE:
        raise OidcError("the workspace is suspended", code="workspace_suspended")
    return agent, workspace


@api.op(
    "GET",
    CALLBACK_PATH,
    summary="Where the identity provider sends the browser back; opens the session and "
    "redirects to the console",
    status=302,
    auth=False,
)
async def sso_callback(call: PublicCall) -> Response:
    services = call.services
    cookie_name = _sso_cookie_name(services)
    raw = request.cookies.get(cookie_name, "")
    state = request.args.get("state", "")
    code = request.args.get("code", "")

    def fail(error: str) -> Response:
        response = _back_to_console(error)
        response.delete_cookie(cookie_name, path="/", secure=cookie_is_secure(services.settings))
        return response

    try:
        flow = services.flows.verify(SSO_FLOW, raw)
    except Unauthorized:
        return fail("sso_expired")
    if not state or not hmac.compare_digest(state, str(flow.get("s", ""))):
        return fail("sso_expired")
    if request.args.get("error") or not code or len(code) > 2000:
        return fail("sso_denied")
    config = await services.storage.get_sso_config(str(flow.get("w")))
    if config is None or not config.enabled:
        return fail("sso_unknown")
    try:
        claims = await services.oidc.complete(
            config,
            redirect_uri=services.settings.server.base_url + API_PREFIX + CALLBACK_PATH,
            code=code,
            nonce=str(flow.get("n", "")),
            code_verifier=str(flow.get("v", "")),
        )
        agent, workspace = await _sso_agent(services, config, claims)
    except OidcError as err:
        await services.storage.audit(
            config.workspace_id,
            actor=f"sso:{config.slug}",
            action="login.failed",
            details={"reason": err.code},
            ip=call.ip,
        )
        return fail(err.code)
    session_cookie, _ = await open_session(services, agent, workspace, ip=call.ip, method="sso")
    response = _back_to_console()
    response.delete_cookie(cookie_name, path="/", secure=cookie_is_secure(services.settings))
    set_session_cookie(response, services, session_cookie)
    return response
