"""The mail to a workspace's owners when one of its webhook subscriptions gets disabled.

``WebhookService`` (web/webhooks.py) calls ``notify_disabled`` right after the commit that
disabled the subscription and wrote its ``webhook.disabled`` audit entry; web/services.py wires
it to the mailer, so neither module imports the other. The mail goes to the workspace's
notification address and to every enabled owner with an email, each with a dedupe key of the
subscription, the disable time and the recipient: a second call for the same disabling queues
nothing. Without SMTP nothing is queued (``Mailer.enqueue``). A crash between the disabling
commit and the enqueue loses the mail, never the audit entry (docs/webhooks.md).
"""

from __future__ import annotations

import datetime

from storage import Role, WebhookSubscription, WorkspaceStatus
from web.mail import Brand, Mailer, read_notifications, render

KIND = "webhook_disabled"  # the mail log's ``kind``


async def notify_disabled(mailer: Mailer, sub: WebhookSubscription, at: float) -> int:
    """Queue the notice of ``sub`` disabled at ``at``; returns how many mails were queued."""
    if not mailer.enabled:
        return 0
    storage = mailer.storage
    ws = await storage.get_workspace(sub.workspace_id)
    if ws is None or ws.status is not WorkspaceStatus.ACTIVE:
        return 0
    recipients: dict[str, str] = {}  # lower-case address -> as written; one mail each
    notify = read_notifications(ws).email
    if notify:
        recipients[notify.lower()] = notify
    for agent in await storage.list_agents(ws.id):
        if agent.role is Role.OWNER and agent.enabled and agent.email:
            recipients.setdefault(agent.email.lower(), agent.email)
    if not recipients:
        return 0
    when = datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [("URL", sub.url), ("Reason", sub.disabled_reason or "failed attempts in a row")]
    if sub.description:
        lines.insert(0, ("Description", sub.description))
    lines.append(("Disabled at", when))
    rendered = render(
        Brand.of(ws),
        subject=f"[{ws.name}] Webhook disabled: {sub.url}",
        intro=(
            "A webhook subscription was disabled because its deliveries kept failing. Events "
            "that happen while it is disabled are not queued for it; pending deliveries are "
            "sent once it is enabled again."
        ),
        lines=lines,
        link=(
            "Open the webhooks screen",
            f"{mailer.settings.server.base_url}/console/#/admin/webhooks",
        ),
    )
    queued = 0
    for key, address in sorted(recipients.items()):
        item = mailer.new_item(
            workspace_id=ws.id,
            kind=KIND,
            recipient=address,
            mail=rendered,
            dedupe_key=f"{KIND}:{sub.id}:{at!r}:{key}",
        )
        if await mailer.enqueue(item):
            queued += 1
    return queued
