"""Encryption at rest and the audit chain meet the features merged beside them: webhook
payloads carry the plaintext of sealed bodies, two-factor and SSO secrets are sealed, and a
webhook's automatic disabling is a chained audit entry. Both backends."""

from __future__ import annotations

import json
import time

from storage import DeliveryState, SsoConfig, TwoFactor, WebhookAttempt
from storage._base import SqlStorage
from storage.crypto import new_master_key_text
from tests.storage.helpers import message, new_conversation
from tests.storage.test_encryption import ring
from tests.storage.test_webhooks import expand

SECRET_BODY = "the invoice number is 4471-quux"


async def test_webhook_payloads_carry_the_plaintext_of_sealed_bodies(storage: SqlStorage) -> None:
    await storage.use_keys(ring(new_master_key_text()))
    ws, conv = await new_conversation(storage)
    sub = await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    await storage.append(message(conv, SECRET_BODY))
    stored = await storage._fetch("SELECT body FROM events WHERE conversation_id=?", conv.id)
    assert all(str(r["body"]).startswith("lc2:") for r in stored if r["body"])
    assert await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand) == (1, False)
    [delivery] = await storage.list_webhook_deliveries(ws.id, sub.id)
    assert json.loads(delivery.payload)["body"] == SECRET_BODY


async def test_two_factor_and_sso_secrets_are_sealed_at_rest(storage: SqlStorage) -> None:
    await storage.use_keys(ring(new_master_key_text()))
    ws = await storage.create_workspace(name="Acme")
    agent = await storage.create_agent(
        ws.id, username="ann", display_name="Ann", password_hash=None
    )
    totp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    await storage.put_two_factor(TwoFactor(agent_id=agent.id, workspace_id=ws.id, totp_secret=totp))
    confirmed = await storage.confirm_two_factor(ws.id, agent.id, step=5, recovery_hashes=["h"])
    assert confirmed.totp_secret == totp
    got = await storage.get_two_factor(ws.id, agent.id)
    assert got is not None and got.totp_secret == totp
    assert [r.totp_secret for r in await storage.list_two_factor(ws.id)] == [totp]

    client_secret = "idp-client-secret-quux-9917"
    config = SsoConfig(
        workspace_id=ws.id,
        slug="acme",
        issuer="https://idp.example",
        client_id="livechat",
        client_secret=client_secret,
        updated_at=time.time(),
    )
    await storage.put_sso_config(config)
    by_ws = await storage.get_sso_config(ws.id)
    by_slug = await storage.find_sso_config("acme")
    assert by_ws is not None and by_ws.client_secret == client_secret
    assert by_slug is not None and by_slug.client_secret == client_secret

    rows = await storage._fetch("SELECT totp_secret FROM agent_two_factor")
    rows += await storage._fetch("SELECT client_secret AS totp_secret FROM workspace_sso")
    assert [str(r["totp_secret"])[:4] for r in rows] == ["lc1:", "lc1:"]


async def test_two_factor_secrets_stored_in_plaintext_are_sealed_by_keys_migrate(
    storage: SqlStorage,
) -> None:
    ws = await storage.create_workspace(name="Acme")
    agent = await storage.create_agent(
        ws.id, username="ann", display_name="Ann", password_hash=None
    )
    await storage.put_two_factor(
        TwoFactor(agent_id=agent.id, workspace_id=ws.id, totp_secret="S" * 32)
    )
    await storage.use_keys(ring(new_master_key_text()))
    assert await storage.seal_plaintext() == 1
    rows = await storage._fetch("SELECT totp_secret FROM agent_two_factor")
    assert str(rows[0]["totp_secret"]).startswith("lc1:")
    got = await storage.get_two_factor(ws.id, agent.id)
    assert got is not None and got.totp_secret == "S" * 32


async def test_a_webhook_disabled_by_failures_is_a_chained_audit_entry(
    storage: SqlStorage,
) -> None:
    ws, conv = await new_conversation(storage)
    await storage.audit(ws.id, actor="ann", action="settings.changed")
    await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    await storage.append(message(conv, "hello"))
    await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand)
    [(delivery, _)] = await storage.due_webhook_deliveries(now=time.time() + 1, limit=10)
    await storage.record_webhook_attempt(
        WebhookAttempt(
            id="a1",
            workspace_id=ws.id,
            delivery_id=delivery.id,
            attempt=1,
            status_code=None,
            error="connect_failed",
            latency_ms=1.0,
            at=time.time(),
        ),
        state=DeliveryState.PENDING,
        next_attempt_at=time.time(),
        disable_after_failures=1,
    )
    actions = [e.action for e in (await storage.list_audit(ws.id)).items]
    assert "webhook.disabled" in actions
    report = await storage.verify_audit(ws.id)
    assert report.ok, report
    await storage.audit(ws.id, actor="ann", action="settings.changed")
    assert (await storage.verify_audit(ws.id)).ok
