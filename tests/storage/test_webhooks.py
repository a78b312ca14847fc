"""The webhook outbox on both backends: fed from committed events after a durable cursor."""

from __future__ import annotations

import json
import time

from storage import DeliveryState, PositionedEvent, WebhookAttempt
from storage._base import SqlStorage, execute
from storage._sql import Q
from tests.storage.conftest import Opener
from tests.storage.helpers import message, new_conversation


def expand(positioned: PositionedEvent) -> list[tuple[str, str, str]]:
    event = positioned.event
    event_id = f"{event.conversation_id}:{event.seq}"
    return [("message.created", event_id, json.dumps({"body": event.body}))]


async def test_committed_events_reach_the_outbox_once_even_across_a_reopen(
    storage: SqlStorage, open_store: Opener
) -> None:
    ws, conv = await new_conversation(storage)
    await storage.append(message(conv, "before the subscription"))
    sub = await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    other = await storage.create_webhook(
        ws.id, url="https://y.test/h", event_types=["chat.closed"], secret="k2"
    )
    await storage.append_many([message(conv, "one"), message(conv, "two")])
    # Committed but not yet fed when the process "dies": another opener finds them.
    async with open_store() as again:
        assert await again.feed_webhooks(limit=100, settle_s=5.0, expand=expand) == (2, False)
        assert await again.feed_webhooks(limit=100, settle_s=5.0, expand=expand) == (0, False)
    assert await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand) == (0, False)
    deliveries = await storage.list_webhook_deliveries(ws.id, sub.id)
    assert sorted(json.loads(d.payload)["body"] for d in deliveries) == ["one", "two"]
    assert await storage.list_webhook_deliveries(ws.id, other.id) == []

    due = await storage.due_webhook_deliveries(now=time.time() + 1, limit=10)
    assert {d.id for d, _ in due} == {d.id for d in deliveries}
    first, owner = due[0]
    assert owner.id == sub.id
    await storage.record_webhook_attempt(
        WebhookAttempt(
            id="a1",
            workspace_id=ws.id,
            delivery_id=first.id,
            attempt=1,
            status_code=200,
            error=None,
            latency_ms=3.0,
            at=time.time(),
        ),
        state=DeliveryState.DELIVERED,
        next_attempt_at=None,
        disable_after_failures=5,
    )
    done = await storage.get_webhook_delivery(ws.id, first.id)
    assert done is not None and done.state is DeliveryState.DELIVERED and done.last_status == 200
    assert [a.status_code for a in await storage.list_webhook_attempts(ws.id, first.id)] == [200]
    again_due = await storage.due_webhook_deliveries(now=time.time() + 1, limit=10)
    assert first.id not in {d.id for d, _ in again_due}

    # Tenancy: another workspace sees nothing; purging the workspace removes it all.
    ws2, _ = await new_conversation(storage, "globex")
    assert await storage.get_webhook(ws2.id, sub.id) is None
    assert await storage.get_webhook_delivery(ws2.id, first.id) is None
    await storage.purge_workspace(ws.id)
    assert await storage.list_webhooks(ws.id) == []


async def test_a_failing_subscription_is_disabled_after_failures_in_a_row(
    storage: SqlStorage,
) -> None:
    ws, conv = await new_conversation(storage)
    sub = await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    await storage.append(message(conv, "hello"))
    await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand)
    [(delivery, _)] = await storage.due_webhook_deliveries(now=time.time() + 1, limit=10)
    disabled = None
    for n in (1, 2):
        disabled = await storage.record_webhook_attempt(
            WebhookAttempt(
                id=f"a{n}",
                workspace_id=ws.id,
                delivery_id=delivery.id,
                attempt=n,
                status_code=None,
                error="connect_failed",
                latency_ms=1.0,
                at=time.time(),
            ),
            state=DeliveryState.PENDING,
            next_attempt_at=time.time(),
            disable_after_failures=2,
        )
    assert disabled is not None and disabled.enabled is False
    found = await storage.get_webhook(ws.id, sub.id)
    assert found is not None and not found.enabled and found.consecutive_failures == 2
    audit = await storage.list_audit(ws.id)
    assert [e.action for e in audit.items] == ["webhook.disabled"]  # in the same commit
    # A disabled subscription's pending deliveries wait.
    assert await storage.due_webhook_deliveries(now=time.time() + 1, limit=10) == []
    await storage.update_webhook(ws.id, sub.id, enabled=True, consecutive_failures=0)
    assert len(await storage.due_webhook_deliveries(now=time.time() + 1, limit=10)) == 1


async def test_events_outside_conversations_are_queued_for_subscribers_only(
    storage: SqlStorage,
) -> None:
    ws, _ = await new_conversation(storage)
    ws2, _ = await new_conversation(storage, "globex")
    wants = await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["agent.status"], secret="k"
    )
    await storage.create_webhook(
        ws.id, url="https://y.test/h", event_types=["message.created"], secret="k"
    )
    items = [
        (ws.id, "agent.status", "evt_1", '{"n":1}'),
        (ws.id, "agent.status", "evt_1", '{"n":1}'),  # the same event twice: stored once
        (ws2.id, "agent.status", "evt_2", '{"n":2}'),  # no subscription there
    ]
    assert await storage.enqueue_webhook_events(items) == 1
    [delivery] = await storage.list_webhook_deliveries(ws.id, wants.id)
    assert delivery.event_id == "evt_1" and delivery.payload == '{"n":1}'


async def test_the_feed_waits_at_a_hole_until_it_settles(storage: SqlStorage) -> None:
    """A missing position may be a transaction that commits late: events after it wait for
    ``settle_s`` (here the hole is made by deleting an event, as a rollback would leave it)."""
    ws, conv = await new_conversation(storage)
    sub = await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    results = await storage.append_many(
        [message(conv, "first"), message(conv, "lost"), message(conv, "third")]
    )
    hole = results[1].event.seq
    await storage._write(
        execute(
            Q(
                "DELETE FROM events WHERE conversation_id=? AND seq=?",
                (conv.id, hole),
            )
        )
    )
    assert await storage.feed_webhooks(limit=100, settle_s=3600.0, expand=expand) == (1, False)
    bodies = [
        json.loads(d.payload)["body"] for d in await storage.list_webhook_deliveries(ws.id, sub.id)
    ]
    assert bodies == ["first"]
    # Once the events after the hole are older than settle_s, the feed steps over it.
    assert await storage.feed_webhooks(limit=100, settle_s=0.0, expand=expand) == (1, False)
    bodies = sorted(
        json.loads(d.payload)["body"] for d in await storage.list_webhook_deliveries(ws.id, sub.id)
    )
    assert bodies == ["first", "third"]


async def test_a_delivery_is_leased_to_one_sender_at_a_time(storage: SqlStorage) -> None:
    ws, conv = await new_conversation(storage)
    await storage.create_webhook(
        ws.id, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    await storage.append(message(conv, "once"))
    await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand)
    now = time.time() + 1
    [(delivery, _)] = await storage.due_webhook_deliveries(now=now, limit=10)
    assert await storage.claim_webhook_deliveries([delivery.id], now=now, lease_until=now + 60) == {
        delivery.id: 0
    }
    # A second sender (or a stale read of the first) gets nothing while the lease runs ...
    assert (
        await storage.claim_webhook_deliveries([delivery.id], now=now, lease_until=now + 60) == {}
    )
    assert await storage.due_webhook_deliveries(now=now, limit=10) == []
    # ... and the delivery is due again when it ends (the sender died mid-attempt).
    assert len(await storage.due_webhook_deliveries(now=now + 61, limit=10)) == 1
