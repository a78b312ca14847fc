"""A webhook subscription disabled after failures in a row is mailed to the workspace's owners:
a real server, a failing HTTP receiver and a real SMTP server (aiosmtpd) started by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.web.client import bearer
from tests.web.receiver import run_receiver
from tests.web.server import run_test_server
from tests.web.smtpd import smtp_server
from tests.web.test_webhooks import FAST, subscribe, until, visitor_says

NOTIFY = "team@acme.test"
OWNER_EMAIL = "owner@acme.test"
MAIL_FAST = {"mail_poll_interval_s": 0.2, "mail_retry_base_s": 0.2, "mail_retry_max_s": 1.0}


async def test_a_disabled_webhook_is_mailed_once_to_the_notification_address_and_owners(
    tmp_path: Path,
) -> None:
    with smtp_server(tmp_path, "plain") as smtp:
        settings: dict[str, Any] = {
            **smtp.settings(),
            **MAIL_FAST,
            **FAST,
            "webhooks_disable_after_failures": 2,
        }
        async with run_receiver() as receiver, run_test_server(tmp_path, **settings) as srv:
            assert srv.services is not None and srv.services.webhooks is not None
            owner = bearer(srv.base_url, srv.acme.owner.token)
            resp = await owner.request("PUT", "/api/v1/settings/notifications", {"email": NOTIFY})
            assert resp.status == 200, resp.body
            await srv.services.storage.update_agent(
                srv.acme.id, srv.acme.owner.id, email=OWNER_EMAIL
            )
            receiver.status = 503
            http, created = await subscribe(
                srv, receiver.url, ["message.created"], description="CRM"
            )
            hook_id = created["webhook"]["id"]
            await visitor_says(srv, "Anyone there?")

            async def disabled() -> Any:
                resp = await http.get(f"/api/v1/webhooks/{hook_id}")
                return not resp.json()["enabled"] and resp.json()

            await until(disabled)
            mails = await smtp.sink.wait(2)
            assert sorted(m.rcpt_tos for m in mails) == [(OWNER_EMAIL,), (NOTIFY,)]
            for mail in mails:
                assert mail.subject == f"[Acme] Webhook disabled: {receiver.url}"
                text = mail.part("plain")
                assert f"URL: {receiver.url}" in text
                assert "Reason: 2 failed attempts in a row" in text
                assert f"{srv.base_url}/console/#/admin/webhooks" in text
                assert receiver.url in mail.part("html")
            log = (await owner.get("/api/v1/mail/log")).json()
            assert sorted(e["kind"] for e in log["entries"]) == ["webhook_disabled"] * 2

            # Another round: the subscription stays disabled, nothing more is mailed, and the
            # notice handed over again for the same disabling (a retry) queues nothing.
            await visitor_says(srv, "Still nobody?", client_msg_id="v-2")
            audit = (await http.get("/api/v1/audit")).json()["entries"]
            [entry] = [e for e in audit if e["action"] == "webhook.disabled"]
            sub = await srv.services.storage.get_webhook(srv.acme.id, hook_id)
            assert sub is not None
            on_disabled = srv.services.webhooks.on_disabled
            assert on_disabled is not None
            assert await on_disabled(sub, entry["at"]) == 0
            mailer = srv.services.mailer
            with trio.fail_after(20):
                await mailer.next_round()
            assert len(smtp.sink.messages) == 2, [m.subject for m in smtp.sink.messages]
