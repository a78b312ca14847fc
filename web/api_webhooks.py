"""Admin API of webhooks: subscriptions, secret rotation, the delivery log, redelivery.

Admins and owners only. A secret is shown when a subscription is created and when it is
rotated, never listed again (only its last four characters). Changes are audited without the
secret. See docs/webhooks.md for payloads, signatures and the retry policy.
"""

from __future__ import annotations

import time
from typing import Literal

import attrs
import trio

from storage import Role, WebhookAttempt, WebhookDelivery, WebhookSubscription
from web.api_admin import audit
from web.auth import new_secret
from web.errors import BadRequest, NotFound
from web.httpapi import ApiBlueprint, Call
from web.schemas import Done
from web.webhooks import WebhookTargetRefused, check_target
from web.wire import items, number, text

api = ApiBlueprint("api_webhooks", "webhooks")

URL_MAX = 2000
DNS_CHECK_TIMEOUT_S = 5.0
EventType = Literal[
    "chat.started",
    "message.created",
    "chat.assigned",
    "chat.transferred",
    "chat.closed",
    "chat.rated",
    "offline_message.created",
    "visitor.identified",
    "agent.status",
]


# ---------------------------------------------------------------- schemas


@attrs.frozen(kw_only=True)
class WebhookOut:
    id: str
    url: str
    event_types: tuple[str, ...]
    description: str | None
    secret_hint: str  # the last four characters of the current secret
    rotating: bool  # the previous secret still signs too
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    created_at: float

    @classmethod
    def of(cls, sub: WebhookSubscription) -> WebhookOut:
        return cls(
            id=sub.id,
            url=sub.url,
            event_types=sub.event_types,
            description=sub.description,
            secret_hint=sub.secret[-4:],
            rotating=sub.previous_secret_expires_at is not None
            and sub.previous_secret_expires_at > time.time(),
            enabled=sub.enabled,
            disabled_reason=sub.disabled_reason,
            consecutive_failures=sub.consecutive_failures,
            created_at=sub.created_at,
        )


@attrs.frozen(kw_only=True)
class WebhookList:
    webhooks: tuple[WebhookOut, ...]


@attrs.frozen(kw_only=True)
class WebhookIn:
    """``url``: https:// (private and loopback addresses are refused unless the server allows
    them); ``event_types``: at least one of the documented types."""

    url: str = attrs.field(**text(max_len=URL_MAX, min_len=1))
    event_types: tuple[EventType, ...] = attrs.field(**items(max_items=20, max_len=40))
    description: str | None = attrs.field(default=None, **text(max_len=200))


@attrs.frozen(kw_only=True)
class WebhookPatchIn:
    """``enabled: true`` re-enables a disabled subscription and resets its failure count."""

    url: str | None = attrs.field(default=None, **text(max_len=URL_MAX, min_len=1))
    event_types: tuple[EventType, ...] | None = attrs.field(
        default=None, **items(max_items=20, max_len=40)
    )
    description: str | None = attrs.field(default=None, **text(max_len=200))
    enabled: bool | None = None


@attrs.frozen(kw_only=True)
class WebhookCreated:
    """``secret`` signs the deliveries: shown only here and after a rotation."""

    webhook: WebhookOut
    secret: str


@attrs.frozen(kw_only=True)
class AttemptOut:
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    at: float

    @classmethod
    def of(cls, a: WebhookAttempt) -> AttemptOut:
        return cls(
            attempt=a.attempt,
            status_code=a.status_code,
            error=a.error,
            latency_ms=round(a.latency_ms, 3),
            at=a.at,
        )


@attrs.frozen(kw_only=True)
class DeliveryOut:
    id: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=d.id,
            event_id=d.event_id,
            event_type=d.event_type,
            state=d.state.value,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at,
            last_status=d.last_status,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )


@attrs.frozen(kw_only=True)
class DeliveryList:
    deliveries: tuple[DeliveryOut, ...]


@attrs.frozen(kw_only=True)
class DeliveryDetail:
    """A delivery with its exact payload and every attempt, oldest first."""

    delivery: DeliveryOut
    payload: str
    attempts_log: tuple[AttemptOut, ...]


@attrs.frozen(kw_only=True)
class DeliveryQuery:
    limit: int = attrs.field(default=50, **number(minimum=1, maximum=500))


# ---------------------------------------------------------------- helpers


async def _check_url(call: Call, url: str) -> None:
    allow = call.services.settings.webhooks.allow_private_targets
    try:
        with trio.fail_after(DNS_CHECK_TIMEOUT_S):
            await check_target(url, allow_private=allow)
    except trio.TooSlowError:
        raise WebhookTargetRefused("the URL's host did not resolve in time") from None


async def _subscription(call: Call, webhook_id: str) -> WebhookSubscription:
    sub = await call.services.storage.get_webhook(call.workspace_id, webhook_id)
    if sub is None:
        raise NotFound()
    return sub


def _poke(call: Call) -> None:
    if call.services.webhooks is not None:
        call.services.webhooks.poke()


def _types(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise BadRequest(
            "subscribe to at least one event type", code="invalid_value", field="$.event_types"
        )
    return tuple(dict.fromkeys(values))


# ---------------------------------------------------------------- operations


@api.op("GET", "/webhooks", summary="Webhook subscriptions", response=WebhookList, role=Role.ADMIN)
async def list_webhooks(call: Call) -> WebhookList:
    subs = await call.services.storage.list_webhooks(call.workspace_id)
    return WebhookList(webhooks=tuple(WebhookOut.of(s) for s in subs))


@api.op(
    "POST",
    "/webhooks",
    summary="Subscribe an endpoint to event types (the signing secret is shown once)",
    body=WebhookIn,
    response=WebhookCreated,
    status=201,
    role=Role.ADMIN,
)
async def create_webhook(call: Call, body: WebhookIn) -> WebhookCreated:
    event_types = _types(body.event_types)
    await _check_url(call, body.url)
    secret = "whsec_" + new_secret()
    sub = await call.services.storage.create_webhook(
        call.workspace_id,
        url=body.url,
        event_types=event_types,
        secret=secret,
        description=body.description,
    )
    await audit(call, "webhook.created", f"webhook:{sub.id}", url=sub.url)
    _poke(call)
    return WebhookCreated(webhook=WebhookOut.of(sub), secret=secret)


@api.op(
    "GET", "/webhooks/{webhook_id}", summary="A subscription", response=WebhookOut, role=Role.ADMIN
)
async def get_webhook(call: Call, webhook_id: str) -> WebhookOut:
    return WebhookOut.of(await _subscription(call, webhook_id))


@api.op(
    "PATCH",
    "/webhooks/{webhook_id}",
    summary="Change a subscription (enabled: true re-enables it)",
    body=WebhookPatchIn,
    response=WebhookOut,
    role=Role.ADMIN,
)
async def update_webhook(call: Call, webhook_id: str, body: WebhookPatchIn) -> WebhookOut:
    await _subscription(call, webhook_id)
    changes: dict[str, object] = {}
    if body.url is not None:
        await _check_url(call, body.url)
        changes["url"] = body.url
    if body.event_types is not None:
        changes["event_types"] = _types(body.event_types)
    if body.description is not None:
        changes["description"] = body.description
    if body.enabled is not None:
        changes["enabled"] = body.enabled
        if body.enabled:
            changes.update(disabled_reason=None, consecutive_failures=0)
        else:
            changes["disabled_reason"] = "disabled by an admin"
    sub = await call.services.storage.update_webhook(call.workspace_id, webhook_id, **changes)
    await audit(call, "webhook.updated", f"webhook:{sub.id}", fields=sorted(changes))
    _poke(call)
    return WebhookOut.of(sub)


@api.op(
    "DELETE",
    "/webhooks/{webhook_id}",
    summary="Delete a subscription and its delivery log",
    response=Done,
    role=Role.ADMIN,
)
async def delete_webhook(call: Call, webhook_id: str) -> Done:
    await _subscription(call, webhook_id)
    await call.services.storage.delete_webhook(call.workspace_id, webhook_id)
    await audit(call, "webhook.deleted", f"webhook:{webhook_id}")
    return Done()


@api.op(
    "POST",
    "/webhooks/{webhook_id}/rotate-secret",
    summary="New signing secret; the old one keeps signing for webhooks_secret_overlap_s",
    response=WebhookCreated,
    role=Role.ADMIN,
)
async def rotate_webhook_secret(call: Call, webhook_id: str) -> WebhookCreated:
    sub = await _subscription(call, webhook_id)
    secret = "whsec_" + new_secret()
    overlap = call.services.settings.webhooks.secret_overlap_s
    sub = await call.services.storage.update_webhook(
        call.workspace_id,
        webhook_id,
        secret=secret,
        previous_secret=sub.secret,
        previous_secret_expires_at=time.time() + overlap,
    )
    await audit(call, "webhook.secret_rotated", f"webhook:{sub.id}")
    return WebhookCreated(webhook=WebhookOut.of(sub), secret=secret)


@api.op(
    "GET",
    "/webhooks/{webhook_id}/deliveries",
    summary="Deliveries of a subscription, newest first",
    query=DeliveryQuery,
    response=DeliveryList,
    role=Role.ADMIN,
)
async def list_deliveries(call: Call, webhook_id: str, query: DeliveryQuery) -> DeliveryList:
    await _subscription(call, webhook_id)
    found = await call.services.storage.list_webhook_deliveries(
        call.workspace_id, webhook_id, limit=query.limit
    )
    return DeliveryList(deliveries=tuple(DeliveryOut.of(d) for d in found))


async def _delivery(call: Call, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    delivery = await call.services.storage.get_webhook_delivery(call.workspace_id, delivery_id)
    if delivery is None or delivery.subscription_id != webhook_id:
        raise NotFound()
    return delivery


@api.op(
    "GET",
    "/webhooks/{webhook_id}/deliveries/{delivery_id}",
    summary="A delivery with its payload and attempt log",
    response=DeliveryDetail,
    role=Role.ADMIN,
)
async def get_delivery(call: Call, webhook_id: str, delivery_id: str) -> DeliveryDetail:
    delivery = await _delivery(call, webhook_id, delivery_id)
    attempts = await call.services.storage.list_webhook_attempts(call.workspace_id, delivery_id)
    return DeliveryDetail(
        delivery=DeliveryOut.of(delivery),
        payload=delivery.payload,
        attempts_log=tuple(AttemptOut.of(a) for a in attempts),
    )


@api.op(
    "POST",
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again now (same event id and payload)",
    response=DeliveryOut,
    role=Role.ADMIN,
)
async def redeliver(call: Call, webhook_id: str, delivery_id: str) -> DeliveryOut:
    await _delivery(call, webhook_id, delivery_id)
    delivery = await call.services.storage.redeliver_webhook(call.workspace_id, delivery_id)
    await audit(call, "webhook.redelivered", f"delivery:{delivery_id}")
    _poke(call)
    return DeliveryOut.of(delivery)
