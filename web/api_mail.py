"""HTTP endpoints of mail and the offline-message inbox (``web/mail.py`` does the work).

- ``GET/PUT /settings/notifications``: where offline messages and missed chats are mailed.
- ``GET /mail/log``: the delivery log (the outbox rows, bodies left out).
- ``GET /inbox``, ``GET /inbox/count``, ``POST /inbox/{id}/assign|reply|done|reopen``.
- ``POST /auth/forgot-password`` and ``POST /auth/reset-password``: single-use links mailed to
  an agent; the answer to "forgot" never says whether the account exists.
- ``POST /widget/transcript``: a visitor asks for their chat by email.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

import attrs

from storage import (
    Agent,
    AgentToken,
    InboxItem,
    InboxStatus,
    MailStatus,
    Role,
    Workspace,
    WorkspaceStatus,
)
from web.auth import hash_secret
from web.errors import BadRequest, Conflict, NotFound, TooManyRequests
from web.httpapi import ApiBlueprint, Call, PublicCall
from web.mail import Brand, Notifications, read_notifications, render
from web.schemas import Done
from web.services import Services
from web.wire import number, text

api = ApiBlueprint("api_mail", "mail")

RESET_PURPOSES = ("password_reset", "invitation")
# One reset mail per account per window: a "forgot" button pressed in a loop mails once.
RESET_MAIL_WINDOW_S = 300


def _is_email(value: str) -> bool:
    from engine import is_email

    return is_email(value)


# ---------------------------------------------------------------- bodies


@attrs.frozen(kw_only=True)
class NotificationSettings:
    """Where the workspace's notices go; ``mail_enabled`` is the server's SMTP (read-only)."""

    email: str | None = attrs.field(default=None, **text(max_len=320))
    missed_chats: bool = True
    mail_enabled: bool = False


@attrs.frozen(kw_only=True)
class NotificationSettingsIn:
    email: str | None = attrs.field(**text(max_len=320))
    missed_chats: bool = True


@attrs.frozen(kw_only=True)
class MailLogQuery:
    status: Literal["queued", "sent", "failed"] | None = None
    limit: int = attrs.field(default=100, **number(minimum=1, maximum=500))


@attrs.frozen(kw_only=True)
class MailLogEntry:
    id: str
    kind: str
    recipient: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: float | None  # only while queued
    last_error: str | None
    conversation_id: str | None
    created_at: float
    sent_at: float | None


@attrs.frozen(kw_only=True)
class MailLog:
    mail_enabled: bool
    entries: tuple[MailLogEntry, ...]


@attrs.frozen(kw_only=True)
class InboxQuery:
    status: Literal["open", "done", "all"] = "open"
    limit: int = attrs.field(default=50, **number(minimum=1, maximum=200))


@attrs.frozen(kw_only=True)
class InboxEntry:
    conversation_id: str
    kind: str  # "offline" (an offline message) or "missed" (a chat nobody answered)
    status: str  # "open" or "done"
    assignee_id: str | None
    replies: int
    visitor_name: str | None
    visitor_email: str | None
    preview: str  # the visitor's first words
    created_at: float
    updated_at: float


@attrs.frozen(kw_only=True)
class InboxList:
    items: tuple[InboxEntry, ...]
    open_count: int
    mail_enabled: bool  # replies go by email only with SMTP


@attrs.frozen(kw_only=True)
class InboxCount:
    open: int


@attrs.frozen(kw_only=True)
class AssignIn:
    agent_id: str | None = attrs.field(**text(max_len=128))


@attrs.frozen(kw_only=True)
class ReplyIn:
    text: str = attrs.field(**text(max_len=10_000, min_len=1))


@attrs.frozen(kw_only=True)
class ForgotPasswordIn:
    username: str = attrs.field(**text(max_len=320, min_len=1))  # a username or an email


@attrs.frozen(kw_only=True)
class ResetPasswordIn:
    token: str = attrs.field(**text(max_len=200, min_len=1))
    new_password: str = attrs.field(**text(max_len=256, min_len=10))


@attrs.frozen(kw_only=True)
class TranscriptIn:
    key: str = attrs.field(**text(max_len=128, min_len=1))  # the widget key
    visitor_token: str = attrs.field(**text(max_len=200, min_len=1))
    conversation_id: str = attrs.field(**text(max_len=128, min_len=1))
    email: str = attrs.field(**text(max_len=320, min_len=3))


# ---------------------------------------------------------------- notification settings


def _notification_out(services: Services, notify: Notifications) -> NotificationSettings:
    return NotificationSettings(
        email=notify.email, missed_chats=notify.missed_chats, mail_enabled=services.mailer.enabled
    )


@api.op(
    "GET",
    "/settings/notifications",
    summary="Where offline messages and missed chats are mailed",
    response=NotificationSettings,
    role=Role.ADMIN,
)
async def get_notifications(call: Call) -> NotificationSettings:
    return _notification_out(call.services, read_notifications(call.caller.workspace))


@api.op(
    "PUT",
    "/settings/notifications",
    summary="Set the notification address (null: no notices)",
    body=NotificationSettingsIn,
    response=NotificationSettings,
    role=Role.ADMIN,
)
async def put_notifications(call: Call, body: NotificationSettingsIn) -> NotificationSettings:
    email = body.email.strip() if body.email else None
    if email is not None and not _is_email(email):
        raise BadRequest("not an email address", code="invalid_value", field="$.email")
    settings = dict(call.caller.workspace.settings)
    settings["notifications"] = {"email": email, "missed_chats": body.missed_chats}
    ws = await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await call.services.access.workspace_updated(ws.id)  # a visitor's offline form mails it
    await call.services.storage.audit(
        ws.id,
        actor=call.caller.actor,
        action="settings.notifications_changed",
        target=f"workspace:{ws.id}",
        ip=call.ip,
    )
    return _notification_out(call.services, read_notifications(ws))


# ---------------------------------------------------------------- delivery log


@api.op(
    "GET",
    "/mail/log",
    summary="Delivery log of the workspace's mail, newest first",
    query=MailLogQuery,
    response=MailLog,
    role=Role.ADMIN,
)
async def mail_log(call: Call, query: MailLogQuery) -> MailLog:
    status = MailStatus(query.status) if query.status else None
    rows = await call.services.storage.list_mail(
        call.workspace_id, status=status, limit=query.limit
    )
    return MailLog(
        mail_enabled=call.services.mailer.enabled,
        entries=tuple(
            MailLogEntry(
                id=m.id,
                kind=m.kind,
                recipient=m.recipient,
                subject=m.subject,
                status=m.status.value,
                attempts=m.attempts,
                next_attempt_at=m.next_attempt_at if m.status is MailStatus.QUEUED else None,
                last_error=m.last_error,
                conversation_id=m.conversation_id,
                created_at=m.created_at,
                sent_at=m.sent_at,
            )
            for m in rows
        ),
    )


# ---------------------------------------------------------------- inbox


async def _entry(call: Call, item: InboxItem) -> InboxEntry:
    storage = call.services.storage
    conv = await storage.get_conversation(call.workspace_id, item.conversation_id)
    name = email = None
    preview = ""
    if conv is not None:
        summary = await call.services.mailer.conversation_summary(call.caller.workspace, conv)
        name, email = summary.name, summary.email
        preview = summary.lines[0][1][:200] if summary.lines else ""
    return InboxEntry(
        conversation_id=item.conversation_id,
        kind=item.kind,
        status=item.status.value,
        assignee_id=item.assignee_id,
        replies=item.replies,
        visitor_name=name,
        visitor_email=email,
        preview=preview,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


@api.op(
    "GET",
    "/inbox",
    summary="Offline messages and unanswered chats, newest first",
    query=InboxQuery,
    response=InboxList,
)
async def list_inbox(call: Call, query: InboxQuery) -> InboxList:
    storage = call.services.storage
    status = None if query.status == "all" else InboxStatus(query.status)
    items = await storage.list_inbox(call.workspace_id, status=status, limit=query.limit)
    return InboxList(
        items=tuple([await _entry(call, i) for i in items]),
        open_count=await storage.count_inbox(call.workspace_id, status=InboxStatus.OPEN),
        mail_enabled=call.services.mailer.enabled,
    )


@api.op(
    "GET", "/inbox/count", summary="Open inbox items (the console's badge)", response=InboxCount
)
async def inbox_count(call: Call) -> InboxCount:
    storage = call.services.storage
    return InboxCount(open=await storage.count_inbox(call.workspace_id, status=InboxStatus.OPEN))


async def _change(call: Call, conversation_id: str, **changes: object) -> InboxEntry:
    item = await call.services.storage.update_inbox_item(
        call.workspace_id, conversation_id, now=time.time(), changes=dict(changes)
    )
    if item is None:
        raise NotFound("no such inbox item", code="not_found")
    return await _entry(call, item)


@api.op(
    "POST",
    "/inbox/{conversation_id}/assign",
    summary="Assign an inbox item to an agent (null: unassign)",
    body=AssignIn,
    response=InboxEntry,
)
async def assign_item(call: Call, conversation_id: str, body: AssignIn) -> InboxEntry:
    if body.agent_id is not None:
        agent = await call.services.storage.get_agent(call.workspace_id, body.agent_id)
        if agent is None or not agent.enabled:
            raise BadRequest("no such agent", code="invalid_value", field="$.agent_id")
    entry = await _change(call, conversation_id, assignee_id=body.agent_id)
    await _audit(call, "inbox.assigned", conversation_id, agent_id=body.agent_id)
    return entry


@api.op(
    "POST", "/inbox/{conversation_id}/done", summary="Mark an inbox item done", response=InboxEntry
)
async def done_item(call: Call, conversation_id: str) -> InboxEntry:
    entry = await _change(call, conversation_id, status=InboxStatus.DONE)
    await _audit(call, "inbox.done", conversation_id)
    return entry


@api.op(
    "POST", "/inbox/{conversation_id}/reopen", summary="Open a done item again", response=InboxEntry
)
async def reopen_item(call: Call, conversation_id: str) -> InboxEntry:
    entry = await _change(call, conversation_id, status=InboxStatus.OPEN)
    await _audit(call, "inbox.reopened", conversation_id)
    return entry


@api.op(
    "POST",
    "/inbox/{conversation_id}/reply",
    summary="Answer an offline message by email (needs SMTP and the visitor's address)",
    body=ReplyIn,
    response=InboxEntry,
)
async def reply_item(call: Call, conversation_id: str, body: ReplyIn) -> InboxEntry:
    services = call.services
    mailer = services.mailer
    ws = call.caller.workspace
    if not mailer.enabled:
        raise Conflict("this server sends no mail (no smtp_url)", code="mail_disabled")
    item = await services.storage.get_inbox_item(call.workspace_id, conversation_id)
    conv = await services.storage.get_conversation(call.workspace_id, conversation_id)
    if item is None or conv is None:
        raise NotFound("no such inbox item", code="not_found")
    summary = await mailer.conversation_summary(ws, conv)
    email = summary.email
    if not email:
        raise Conflict("the visitor left no email address", code="no_email")
    agent = call.caller.agent
    quoted = summary.lines[:1]
    rendered = render(
        Brand.of(ws),
        subject=f"Re: your message to {ws.name}",
        intro=f"{agent.display_name} from {ws.name} answered your message:",
        body=body.text,
        lines=[(f"You wrote ({who})", what) for who, what in quoted],
        footer=f"{agent.display_name}, {ws.name}",
    )
    mail = mailer.new_item(
        workspace_id=ws.id,
        kind="reply",
        recipient=email,
        mail=rendered,
        conversation_id=conversation_id,
    )
    updated = await services.storage.update_inbox_item(
        call.workspace_id, conversation_id, now=time.time(), changes={}, reply=mail
    )
    if updated is None:
        raise NotFound("no such inbox item", code="not_found")
    mailer.wake()
    await _audit(call, "inbox.replied", conversation_id, mail_id=mail.id)
    return await _entry(call, updated)


async def _audit(call: Call, action: str, conversation_id: str, **details: object) -> None:
    await call.services.storage.audit(
        call.workspace_id,
        actor=call.caller.actor,
        action=action,
        target=f"conversation:{conversation_id}",
        details=dict(details),
        ip=call.ip,
    )


# ---------------------------------------------------------------- agent links


async def mail_agent_link(
    services: Services, ws: Workspace, agent: Agent, *, purpose: str, dedupe_key: str | None = None
) -> bool:
    """Mint a single-use link for ``agent`` and queue the mail; False without SMTP or email."""
    mailer = services.mailer
    if not mailer.enabled or not agent.email:
        return False
    s = services.settings
    token = secrets.token_urlsafe(32)
    now = time.time()
    ttl = (
        s.accounts.invitation_ttl_s if purpose == "invitation" else s.accounts.password_reset_ttl_s
    )
    link = f"{s.server.base_url}/console/#{purpose.replace('_', '-')}={token}"
    hours = max(1, round(ttl / 3600))
    if purpose == "invitation":
        rendered = render(
            Brand.of(ws),
            subject=f"You are invited to {ws.name}'s live chat",
            intro=(
                f"Hello {agent.display_name}, an account ({agent.username}) was made for you."
                f" Choose your password with this link within {hours} hour(s):"
            ),
            link=("Choose a password", link),
        )
    else:
        rendered = render(
            Brand.of(ws),
            subject=f"Reset your {ws.name} live chat password",
            intro=(
                f"Someone asked to reset the password of {agent.username}. The link works once,"
                f" within {hours} hour(s). If it was not you, ignore this mail."
            ),
            link=("Choose a new password", link),
        )
    # The token first: a queued mail never carries a link that was not stored.
    await services.storage.create_agent_token(
        AgentToken(
            token_hash=hash_secret(token),
            workspace_id=ws.id,
            agent_id=agent.id,
            purpose=purpose,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    item = mailer.new_item(
        workspace_id=ws.id,
        kind=purpose,
        recipient=agent.email,
        mail=rendered,
        dedupe_key=dedupe_key,
    )
    # False: this window's mail was queued already (the unused new token just expires)
    return await mailer.enqueue(item)


@api.op(
    "POST",
    "/auth/forgot-password",
    summary="Mail a password-reset link (the same answer whether or not the account exists)",
    body=ForgotPasswordIn,
    response=Done,
    status=202,
    auth=False,
)
async def forgot_password(call: PublicCall, body: ForgotPasswordIn) -> Done:
    services = call.services
    storage = services.storage
    wanted = body.username.strip()
    wait = await services.login_throttle.check(account=f"reset:{wanted.lower()}", ip=call.ip)
    if wait > 0:
        return Done()  # throttled like a failed login, and answered the same
    candidates: list[Agent] = []
    agent = await storage.find_agent_by_username(wanted.lower())
    if agent is not None:
        candidates.append(agent)
    elif "@" in wanted:
        candidates = await storage.find_agents_by_email(wanted)
    for agent in candidates:
        ws = await storage.get_workspace(agent.workspace_id)
        if ws is None or ws.status is not WorkspaceStatus.ACTIVE or not agent.enabled:
            continue
        window = int(time.time() // RESET_MAIL_WINDOW_S)
        sent = await mail_agent_link(
            services, ws, agent, purpose="password_reset", dedupe_key=f"reset:{agent.id}:{window}"
        )
        await storage.audit(
            ws.id,
            actor="anonymous",
            action="password.reset_requested",
            target=f"agent:{agent.id}",
            details={"mailed": sent},
            ip=call.ip,
        )
    return Done()


@api.op(
    "POST",
    "/auth/reset-password",
    summary="Set a new password with a mailed link's token (single use); ends all sessions",
    body=ResetPasswordIn,
    response=Done,
    auth=False,
)
async def reset_password(call: PublicCall, body: ResetPasswordIn) -> Done:
    services = call.services
    storage = services.storage
    # Hash first (slow, bounded by the hasher's queue), then spend the token atomically.
    services.hasher.admit()  # a full hashing queue: 503 at once
    new_hash = await services.hasher.hash(body.new_password)
    now = time.time()
    token = await storage.use_agent_token(
        hash_secret(body.token.strip()), purposes=RESET_PURPOSES, now=now
    )
    agent = await storage.get_agent(token.workspace_id, token.agent_id) if token else None
    if token is None or agent is None or not agent.enabled:
        await storage.audit(
            token.workspace_id if token else None,
            actor="anonymous",
            action="password.reset_failed",
            details={"reason": "invalid_token"},
            ip=call.ip,
        )
        raise BadRequest(
            "this link is invalid, used or expired; ask for a new one",
            code="invalid_token",
            field="$.token",
        )
    await storage.update_agent(
        agent.workspace_id, agent.id, password_hash=new_hash, password_changed_at=now
    )
    await storage.delete_agent_sessions(agent.id)
    await services.access.close_agent(agent.workspace_id, agent.id, "password reset")
    await storage.audit(
        agent.workspace_id,
        actor=f"agent:{agent.id}",
        action="password.reset" if token.purpose == "password_reset" else "invitation.accepted",
        target=f"agent:{agent.id}",
        ip=call.ip,
    )
    return Done()


# ---------------------------------------------------------------- transcripts


@api.op(
    "POST",
    "/widget/transcript",
    summary="Mail a visitor the transcript of their chat (with the visitor token)",
    body=TranscriptIn,
    response=Done,
    status=202,
    auth=False,
)
async def mail_transcript(call: PublicCall, body: TranscriptIn) -> Done:
    services = call.services
    storage = services.storage
    mailer = services.mailer
    if not mailer.enabled:
        raise Conflict("this server sends no mail", code="mail_disabled")
    email = body.email.strip()
    if not _is_email(email):
        raise BadRequest("not an email address", code="invalid_value", field="$.email")
    ws = await storage.get_workspace_by_widget_key(body.key)
    if ws is None or ws.status is not WorkspaceStatus.ACTIVE:
        raise NotFound("unknown widget key")
    visitor = await storage.find_visitor_by_token_hash(ws.id, hash_secret(body.visitor_token))
    conv = await storage.get_conversation(ws.id, body.conversation_id)
    if visitor is None or conv is None or conv.visitor_id != visitor.id:
        raise NotFound("no such conversation", code="not_found")
    wait = services.profile_updates.hit(f"transcript:{visitor.id}")
    if wait > 0:
        raise TooManyRequests("too many transcript requests", retry_after_s=wait)
    summary = await mailer.conversation_summary(ws, conv)
    rendered = render(
        Brand.of(ws),
        subject=f"Your chat with {ws.name}",
        intro=f"Here is the transcript of your chat with {ws.name}, as you asked.",
        lines=summary.lines,
    )
    item = mailer.new_item(
        workspace_id=ws.id,
        kind="transcript",
        recipient=email,
        mail=rendered,
        # the same chat, to the same address, at the same length: mailed once
        dedupe_key=f"transcript:{conv.id}:{conv.last_seq}:{hash_secret(email.lower())[:16]}",
        conversation_id=conv.id,
    )
    await mailer.enqueue(item)
    await storage.audit(
        ws.id,
        actor=f"visitor:{visitor.id}",
        action="transcript.requested",
        target=f"conversation:{conv.id}",
        ip=call.ip,
    )
    return Done()
