"""Outgoing mail and the offline-message inbox: a durable outbox drained by one service.

``Mailer.serve`` runs in the services nursery. Each round it

1. scans for conversations that closed as an offline message or unanswered (``missed``) and
   have no inbox item yet: it adds the item and, in the same commit, the notice to the
   workspace's notification address. The scan reads what the engine committed, so a notice is
   never lost to a crash between the visitor's acknowledgement and the mail, and a retried
   offline message (the same conversation, by its client id) is noticed once.
2. sends the mail that is due, each attempt in a worker thread (``web.smtp``), at most
   ``mail_threads`` at once. A failure is retried with exponential backoff
   (``mail_retry_base_s`` doubling up to ``mail_retry_max_s``) until ``mail_max_attempts``;
   a permanent refusal (5xx) fails at once. The rows stay as the delivery log.

Without ``smtp_url`` the inbox still fills, nothing is queued, and the widget promises no email.
Delivery is at least once: a server killed between the SMTP server's "250 OK" and recording it
sends that mail again after its lease; each mail carries a stable ``Message-ID`` so mail
clients drop the copy.
"""

from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

import attrs
import trio

from storage import (
    AuthorType,
    Conversation,
    EventKind,
    InboxItem,
    MailItem,
    Storage,
    Visibility,
    Workspace,
    WorkspaceStatus,
)
from web.settings import Settings
from web.smtp import SmtpFailed, SmtpTarget, deliver

log = logging.getLogger("livechat.mail")

VISITOR_MAIL_KINDS = frozenset({"reply", "transcript"})  # Reply-To: the notification address
PRUNE_INTERVAL_S = 3600.0
# After a complete scan, later scans look back only this far (a conversation closed just before
# a scan may commit just after it); after a restart the first scan covers inbox_scan_lookback_s.
SCAN_OVERLAP_S = 600.0
SCAN_PAGE = 100  # how often old delivery-log rows are deleted
ROUND_TIMEOUT_S = 120.0  # one scan-and-send round; a stuck database fails the round, not the loop
MAX_NOTICE_EVENTS = 50  # events of a conversation quoted in a notice or transcript
DEFAULT_COLOR = "#2f6fed"


# ---------------------------------------------------------------- workspace mail settings


@attrs.frozen(kw_only=True)
class Notifications:
    """Where a workspace's notices go (``workspace.settings["notifications"]``)."""

    email: str | None = None  # offline messages and missed chats are mailed here
    missed_chats: bool = True  # also mail a notice for chats that ended unanswered


def read_notifications(ws: Workspace) -> Notifications:
    raw = ws.settings.get("notifications")
    if not isinstance(raw, Mapping):
        return Notifications()
    email = raw.get("email")
    return Notifications(
        email=email if isinstance(email, str) and email else None,
        missed_chats=raw.get("missed_chats", True) is not False,
    )


@attrs.frozen(kw_only=True)
class Brand:
    name: str
    color: str = DEFAULT_COLOR

    @classmethod
    def of(cls, ws: Workspace) -> Brand:
        widget = ws.settings.get("widget")
        color = widget.get("color") if isinstance(widget, Mapping) else None
        if isinstance(color, str) and len(color) == 7 and color.startswith("#"):
            return cls(name=ws.name, color=color)
        return cls(name=ws.name)


# The widget's default offline text promises email; without SMTP it must not.
DEFAULT_OFFLINE_TEXT = "We are away. Leave a message and we will email you."
NO_MAIL_OFFLINE_TEXT = "We are away. Leave a message and we will read it when we are back."


def offline_text(configured: str, *, mail_enabled: bool) -> str:
    """The offline form's title: the default text promises a reply by email only when this
    server can send one; a workspace's own text is shown as written."""
    if not mail_enabled and configured == DEFAULT_OFFLINE_TEXT:
        return NO_MAIL_OFFLINE_TEXT
    return configured


# ---------------------------------------------------------------- templates


@attrs.frozen(kw_only=True)
class Rendered:
    subject: str
    text: str
    html: str


def _one_line(value: str, limit: int = 200) -> str:
    """Header-safe: no line breaks (header injection), bounded length."""
    return " ".join(value.split())[:limit]


def render(
    brand: Brand,
    *,
    subject: str,
    intro: str,
    lines: Iterable[tuple[str, str]] = (),
    body: str | None = None,
    link: tuple[str, str] | None = None,
    footer: str | None = None,
) -> Rendered:
    """Plain text and HTML of one mail: ``intro``, quoted ``lines`` (who, what), a free
    ``body``, one ``link`` (label, url). Everything user-written is escaped in the HTML."""
    lines = list(lines)
    text_parts = [intro, ""]
    for who, what in lines:
        text_parts.append(f"{who}: {what}")
    if lines:
        text_parts.append("")
    if body:
        text_parts += [body, ""]
    if link:
        text_parts += [f"{link[0]}: {link[1]}", ""]
    text_parts.append(footer or f"-- {brand.name}")
    e = html.escape
    color = e(brand.color)
    rows = "".join(
        f'<p style="margin:4px 0"><b>{e(who)}:</b> {e(what).replace(chr(10), "<br>")}</p>'
        for who, what in lines
    )
    body_html = f"<p>{e(body).replace(chr(10), '<br>')}</p>" if body else ""
    link_html = (
        f'<p><a href="{e(link[1])}" style="background:{color};color:#fff;padding:8px 14px;'
        f'border-radius:4px;text-decoration:none">{e(link[0])}</a></p>'
        if link
        else ""
    )
    page = (
        '<!doctype html><html><body style="font-family:sans-serif;margin:0">'
        f'<div style="background:{color};color:#fff;padding:12px 16px;font-size:18px">'
        f"{e(brand.name)}</div>"
        f'<div style="padding:16px"><p>{e(intro)}</p>{rows}{body_html}{link_html}'
        f'<p style="color:#6b7280;font-size:12px">{e(footer or brand.name)}</p></div>'
        "</body></html>"
    )
    return Rendered(subject=_one_line(subject), text="\n".join(text_parts), html=page)


# ---------------------------------------------------------------- the mailer


@attrs.frozen(kw_only=True)
class ChatSummary:
    name: str | None  # what the visitor gave (offline form, profile)
    email: str | None
    lines: tuple[tuple[str, str], ...]  # (author, text) the visitor saw, oldest first

    @property
    def who(self) -> str:
        if self.name and self.email:
            return f"{self.name} <{self.email}>"
        return self.name or self.email or "a visitor"


@attrs.define(eq=False)
class Mailer:
    """Queues mail durably and sends it; see the module docstring."""

    settings: Settings
    storage: Storage
    clock: Callable[[], float] = time.time
    _target: SmtpTarget | None = attrs.field(init=False, default=None)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)
    rounds: int = attrs.field(init=False, default=0)  # finished rounds
    _pruned_at: float = attrs.field(init=False, default=0.0)
    _scanned_until: float | None = attrs.field(init=False, default=None)
    _round_done: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        s = self.settings
        if s.mail.smtp_url is not None:
            self._target = SmtpTarget.from_url(
                s.mail.smtp_url, ca_file=s.mail.smtp_ca_file, timeout_s=s.mail.smtp_timeout_s
            )
        self._limiter = trio.CapacityLimiter(max(1, s.mail.threads))

    @property
    def enabled(self) -> bool:
        """SMTP is configured: mail is queued and sent, and the widget may promise email."""
        return self._target is not None

    def wake(self) -> None:
        """Run a round now (new mail queued, an offline message just arrived)."""
        self._wake.set()

    async def next_round(self) -> None:
        """Wait until a whole round has run after this call (what a test waits for before it
        checks that nothing more was sent); wakes the service so it is not a poll interval."""
        target = self.rounds + 2
        while self.rounds < target:
            self.wake()
            await self._round_done.wait()

    # ------------------------------------------------------------ queueing

    def new_item(
        self,
        *,
        workspace_id: str | None,
        kind: str,
        recipient: str,
        mail: Rendered,
        dedupe_key: str | None = None,
        conversation_id: str | None = None,
    ) -> MailItem:
        now = self.clock()
        return MailItem(
            id=secrets.token_urlsafe(12),
            workspace_id=workspace_id,
            conversation_id=conversation_id,
            kind=kind,
            dedupe_key=dedupe_key,
            recipient=_one_line(recipient, 320),
            subject=mail.subject,
            text_body=mail.text,
            html_body=mail.html,
            next_attempt_at=now,
            created_at=now,
        )

    async def enqueue(self, item: MailItem) -> bool:
        """Queue ``item`` (False: its dedupe key was queued before); nothing without SMTP."""
        if not self.enabled:
            return False
        added = await self.storage.enqueue_mail(item)
        self.wake()
        return added

    # ------------------------------------------------------------ the service

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan and send until cancelled; a failing round is logged and retried next round."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            delay = self.settings.mail.poll_interval_s
            try:
                with trio.fail_after(ROUND_TIMEOUT_S):
                    await self.scan_once()
                    await self._prune()
                    if self.enabled:
                        await self.send_due()
                        due = await self.storage.next_mail_due_at()
                        if due is not None:
                            delay = max(0.0, min(delay, due - self.clock()))
            except Exception:  # supervision boundary: the database may be briefly unavailable
                log.exception("mail round failed")
            self.rounds += 1
            done, self._round_done = self._round_done, trio.Event()
            done.set()
            with trio.move_on_after(delay):
                await self._wake.wait()

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = now
        before = now - self.settings.mail.log_keep_days * 86400.0
        removed = await self.storage.prune_mail(before=before)
        if removed:
            log.info("pruned %d old mail log entries", removed)

    async def scan_once(self) -> int:
        """Add inbox items (and their notices) for newly closed offline/missed chats."""
        now = self.clock()
        since = now - self.settings.mail.inbox_scan_lookback_s
        if self._scanned_until is not None:
            since = max(since, self._scanned_until - SCAN_OVERLAP_S)
        added = 0
        spaces: dict[str, Workspace | None] = {}
        found = await self.storage.unscanned_inbox_conversations(since=since, limit=SCAN_PAGE)
        for conv in found:
            if conv.workspace_id not in spaces:
                spaces[conv.workspace_id] = await self.storage.get_workspace(conv.workspace_id)
            ws = spaces[conv.workspace_id]
            if ws is None:
                continue
            item = InboxItem(
                conversation_id=conv.id,
                workspace_id=ws.id,
                kind=str(conv.close_reason),
                created_at=conv.closed_at or self.clock(),
                updated_at=self.clock(),
            )
            notice = await self._notice(ws, conv)
            if await self.storage.add_inbox_item(item, mail=notice):
                added += 1
        if len(found) < SCAN_PAGE:  # all seen: the next scan may start later
            self._scanned_until = now
        return added

    async def _notice(self, ws: Workspace, conv: Conversation) -> MailItem | None:
        notify = read_notifications(ws)
        if not self.enabled or notify.email is None or ws.status is not WorkspaceStatus.ACTIVE:
            return None
        offline = str(conv.close_reason) == "offline"
        if not offline and not notify.missed_chats:
            return None
        summary = await self.conversation_summary(ws, conv)
        who, lines = summary.who, summary.lines
        brand = Brand.of(ws)
        inbox = f"{self.settings.server.base_url}/console/#inbox/{conv.id}"
        if offline:
            rendered = render(
                brand,
                subject=f"[{ws.name}] Offline message from {who}",
                intro=f"{who} left a message while nobody was available.",
                lines=lines,
                link=("Open the inbox", inbox),
            )
        else:
            rendered = render(
                brand,
                subject=f"[{ws.name}] Missed chat with {who}",
                intro=f"A chat with {who} ended before anyone answered.",
                lines=lines,
                link=("Open the inbox", inbox),
            )
        return self.new_item(
            workspace_id=ws.id,
            kind="offline_message" if offline else "missed_chat",
            recipient=notify.email,
            mail=rendered,
            dedupe_key=f"notice:{conv.id}",
            conversation_id=conv.id,
        )

    async def conversation_summary(self, ws: Workspace, conv: Conversation) -> ChatSummary:
        """Who the visitor is and what was said that the visitor saw (no notes, no whispers)."""
        events = await self.storage.history(
            ws.id, conv.id, limit=MAX_NOTICE_EVENTS, include_agents_only=False
        )
        visitor = await self.storage.get_visitor(ws.id, conv.visitor_id)
        email = visitor.email if visitor is not None else None
        name = visitor.name if visitor is not None else None
        agents = {a.id: a.display_name for a in await self.storage.list_agents(ws.id)}
        said: list[tuple[AuthorType, str | None, str]] = []
        for ev in events:
            if ev.visibility is not Visibility.ALL:
                continue
            if ev.kind is EventKind.OFFLINE_MESSAGE:
                email = str(ev.data.get("email") or "") or email
                name = str(ev.data.get("name") or "") or name
            if ev.kind in (EventKind.MESSAGE, EventKind.OFFLINE_MESSAGE) and ev.body:
                said.append((ev.author_type, ev.author_id, ev.body))
        lines: list[tuple[str, str]] = []
        for author_type, author_id, body in said:
            if author_type is AuthorType.AGENT:
                author = agents.get(author_id or "", "Agent")
            elif author_type is AuthorType.VISITOR:
                author = name or "Visitor"
            else:
                author = ws.name
            lines.append((author, body))
        return ChatSummary(name=name, email=email, lines=tuple(lines))

    async def send_due(self) -> int:
        """Attempt every due mail (in parallel, bounded by the thread limiter)."""
        due = await self.storage.due_mail(self.clock(), limit=4 * self.settings.mail.threads)
        async with trio.open_nursery() as nursery:
            for item in due:
                nursery.start_soon(self._attempt, item)
        return len(due)

    async def _attempt(self, item: MailItem) -> None:
        assert self._target is not None
        s = self.settings
        if item.attempts >= s.mail.max_attempts:
            # its earlier attempts never recorded an outcome (the server died mid-attempt)
            await self.storage.mail_attempt_failed(item.id, error="gave up", retry_at=None)
            return
        try:
            message = await self._message(item)
        except (ValueError, TypeError) as err:  # a header the email package refuses
            error = f"invalid message ({type(err).__name__})"
            await self.storage.mail_attempt_failed(item.id, error=error, retry_at=None)
            return
        lease_until = self.clock() + 2 * s.mail.smtp_timeout_s + 5.0
        if not await self.storage.claim_mail(item, lease_until=lease_until):
            return  # another server (or an earlier round) took it
        attempts = item.attempts + 1
        try:
            await deliver(self._target, message, self._limiter)
        except SmtpFailed as err:
            give_up = err.permanent or attempts >= s.mail.max_attempts
            backoff = min(s.mail.retry_max_s, s.mail.retry_base_s * 2 ** (attempts - 1))
            retry_at = None if give_up else self.clock() + backoff
            log.warning("mail %s attempt %d failed: %s", item.id, attempts, err.summary)
            with _recording(s):
                await self.storage.mail_attempt_failed(
                    item.id, error=err.summary, retry_at=retry_at
                )
            return
        # Recorded even when the service is being cancelled (shutdown): an unrecorded success
        # would be sent again after the lease.
        with _recording(s):
            await self.storage.mail_sent(item.id, at=self.clock())

    async def _message(self, item: MailItem) -> EmailMessage:
        sender = self.settings.mail.from_address or ""
        name = "Live chat"
        reply_to = None
        if item.workspace_id is not None:
            ws = await self.storage.get_workspace(item.workspace_id)
            if ws is not None:
                name = ws.name
                if item.kind in VISITOR_MAIL_KINDS:  # a visitor's answer reaches the team
                    reply_to = read_notifications(ws).email
        msg = EmailMessage()
        msg["From"] = formataddr((_one_line(name, 100), sender))
        msg["To"] = item.recipient
        if reply_to:
            msg["Reply-To"] = reply_to
        msg["Subject"] = item.subject
        msg["Date"] = format_datetime(_utc(item.created_at))
        msg["Message-ID"] = f"<{item.id}@{sender.rpartition('@')[2] or 'livechat'}>"
        msg["Auto-Submitted"] = "auto-generated" if item.kind != "reply" else "no"
        msg.set_content(item.text_body)
        msg.add_alternative(item.html_body, subtype="html")
        return msg


def _recording(settings: Settings) -> trio.CancelScope:
    """A shielded, bounded scope for writing down the outcome of an attempt."""
    return trio.CancelScope(
        shield=True, deadline=trio.current_time() + settings.engine.storage_timeout_s
    )


def _utc(at: float) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
