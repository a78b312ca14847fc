"""Webhooks: signed HTTP deliveries of committed chat events (docs/webhooks.md).

Two loops run in the services nursery, off the hot path:

- the **feeder** moves committed events into the durable outbox (``Storage.feed_webhooks``: a
  cursor over the events table, advanced in the same transaction that inserts the deliveries),
  so nothing is written before a commit and nothing committed is lost if the process dies;
- the **sender** posts due deliveries, at most ``webhooks_max_concurrent`` at once, logs every
  attempt (status, latency), retries with exponential backoff until ``webhooks_retry_window_s``
  has passed, and disables a subscription after ``webhooks_disable_after_failures`` failed
  attempts in a row (audited as ``webhook.disabled``, shown in the console, and, through the
  ``on_disabled`` callback set in web/services.py, mailed to the owners: web/webhook_notice.py).

Targets are checked against SSRF when a subscription is saved and again before every attempt
(DNS can change): loopback, private, link-local, multicast and reserved addresses and plain
``http://`` are refused unless ``webhooks_allow_private_targets`` is on. Redirects are not
followed. Errors: ``WebhookTargetRefused`` (code ``webhook_target_refused``).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from engine import FailureLog
from storage import (
    MAX_PAGE,
    DeliveryState,
    EventKind,
    PositionedEvent,
    Storage,
    StorageError,
    Visibility,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from web import strictjson
from web.errors import BadRequest
from web.settings import Settings

log = logging.getLogger("livechat.webhooks")

SIGNATURE_HEADER = "X-Livechat-Signature"
USER_AGENT = "livechat-webhooks/1"
STORAGE_STEP_TIMEOUT_S = 30.0  # one feed or one due-read; a stuck database is retried later

# Event types a subscription can ask for (docs/webhooks.md lists their payloads).
EVENT_TYPES: tuple[str, ...] = (
    "chat.started",
    "message.created",
    "chat.assigned",
    "chat.transferred",
    "chat.closed",
    "chat.rated",
    "offline_message.created",
    "visitor.identified",
    "agent.status",
)
PER_SUBSCRIPTION_IN_FLIGHT = 2  # attempts to one subscription at once
SIGNALS_QUEUE = 1000  # non-conversation events waiting for their outbox write

# Called with a subscription just disabled and the time of the attempt that disabled it.
OnDisabled = Callable[[WebhookSubscription, float], Awaitable[object]]


class WebhookTargetRefused(BadRequest):
    """The URL is not one we deliver to (scheme, or an address refused against SSRF)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="webhook_target_refused", field="$.url")


# ---------------------------------------------------------------- payloads and signatures


def _types_of(positioned: PositionedEvent) -> list[str]:
    event = positioned.event
    types: list[str] = []
    if event.seq == 1 and event.kind != EventKind.OFFLINE_MESSAGE:
        types.append("chat.started")
    if event.kind == EventKind.MESSAGE and event.visibility == Visibility.ALL:
        types.append("message.created")
    elif event.kind == EventKind.ASSIGNED:
        types.append("chat.assigned")
    elif event.kind == EventKind.TRANSFERRED:
        types.append("chat.transferred")
    elif event.kind == EventKind.STATUS and event.data.get("state") == "closed":
        types.append("chat.closed")
    elif event.kind == EventKind.RATING:
        types.append("chat.rated")
    elif event.kind == EventKind.OFFLINE_MESSAGE:
        types.append("offline_message.created")
    return types


def expand_event(positioned: PositionedEvent) -> list[tuple[str, str, str]]:
    """The webhook events one stored event gives: (type, id, JSON body) each.

    The id is stable (conversation, sequence number, type), so a receiver can drop a delivery
    it has already processed: retries and manual redeliveries carry the same id.
    """
    event = positioned.event
    out = []
    for event_type in _types_of(positioned):
        event_id = f"evt_{event.conversation_id}_{event.seq}_{event_type}"
        body = {
            "id": event_id,
            "type": event_type,
            "created_at": event.created_at,
            "workspace_id": event.workspace_id,
            "data": {
                "conversation_id": event.conversation_id,
                "seq": event.seq,
                "kind": event.kind.value,
                "author_type": event.author_type.value,
                "author_id": event.author_id,
                "body": event.body,
                "details": dict(event.data),
            },
        }
        out.append((event_type, event_id, strictjson.dumps(body)))
    return out


def signature_header(keys: Sequence[str], timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>[,v1=<hex>]``: HMAC-SHA256 over ``b"<t>." + body`` per secret."""
    signed = str(timestamp).encode("ascii") + b"." + body
    parts = [f"t={timestamp}"]
    for secret in keys:
        digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
        parts.append(f"v1={digest}")
    return ",".join(parts)


def signing_secrets(sub: WebhookSubscription, now: float) -> list[str]:
    """The current secret, plus the previous one while its overlap after a rotation lasts."""
    found = [sub.secret]
    if (
        sub.previous_secret is not None
        and sub.previous_secret_expires_at is not None
        and now < sub.previous_secret_expires_at
    ):
        found.append(sub.previous_secret)
    return found


# ---------------------------------------------------------------- SSRF


def _address_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse a URL we must not post to; resolves the host (bounded by the caller)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookTargetRefused("the URL is not valid") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookTargetRefused("the URL must be an absolute https:// URL")
    if parts.username or parts.password:
        raise WebhookTargetRefused("the URL must not carry credentials")
    if parts.scheme != "https" and not allow_private:
        raise WebhookTargetRefused("the URL must use https://")
    if allow_private:
        return
    host = parts.hostname
    try:
        infos = await trio.socket.getaddrinfo(host, port or 443, type=trio.socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookTargetRefused("the URL's host does not resolve") from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or any(_address_refused(a) for a in addresses):
        raise WebhookTargetRefused(
            "the URL's host resolves to a private, loopback or reserved address"
        )


# ---------------------------------------------------------------- the service


def next_delay_s(settings: Settings, attempt: int) -> float:
    """Exponential backoff after attempt ``attempt`` (1-based), capped, with 10 % jitter."""
    base = settings.webhooks.retry_base_s * (2 ** min(attempt - 1, 30))
    delay = min(base, settings.webhooks.retry_max_s)
    return float(delay * (1 + random.random() / 10))


Signal = tuple[str, str, str, str]  # workspace id, event type, event id, payload


def _signal_channel() -> tuple[trio.MemorySendChannel[Signal], trio.MemoryReceiveChannel[Signal]]:
    return trio.open_memory_channel[Signal](SIGNALS_QUEUE)


def signal_payload(workspace_id: str, event_type: str, data: dict[str, object]) -> tuple[str, str]:
    """(event id, JSON body) of an event that is not a conversation event."""
    now = time.time()
    event_id = f"evt_{event_type}_{secrets.token_urlsafe(12)}"
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": now,
        "workspace_id": workspace_id,
        "data": data,
    }
    return event_id, strictjson.dumps(body)


@attrs.define(eq=False)
class WebhookService:
    """The feeder and the sender; ``poke`` wakes them (a new subscription, a redelivery)."""

    storage: Storage
    settings: Settings
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _signals: tuple[
        trio.MemorySendChannel[tuple[str, str, str, str]],
        trio.MemoryReceiveChannel[tuple[str, str, str, str]],
    ] = attrs.field(factory=lambda: _signal_channel())
    dropped_signals: int = 0
    _inflight: set[str] = attrs.field(factory=set)  # delivery ids being attempted
    # attempts by outcome ("delivered", "retry", "failed"); subscriptions disabled
    attempts: collections.Counter[str] = attrs.field(factory=collections.Counter)
    disabled_total: int = 0
    _per_sub: collections.Counter[str] = attrs.field(factory=collections.Counter)
    # the owners' notice (web/webhook_notice.py), set by web/services.py; None: no notice
    on_disabled: OnDisabled | None = attrs.field(default=None, kw_only=True)

    def poke(self) -> None:
        self._wake.set()

    def signal(self, workspace_id: str, event_type: str, data: dict[str, object]) -> None:
        """Hand over a visitor or agent event (not a conversation event) without waiting.

        These are not in the events table, so they are written to the outbox by the
        ``_write_signals`` task, in batches; a full queue drops the event (counted, logged)
        rather than slow the socket that caused it. See docs/webhooks.md.
        """
        event_id, payload = signal_payload(workspace_id, event_type, data)
        try:
            self._signals[0].send_nowait((workspace_id, event_type, event_id, payload))
        except trio.WouldBlock:
            self.dropped_signals += 1
            log.warning("webhooks: %s dropped, the outbox queue is full", event_type)

    async def _write_signals(self) -> None:
        receive = self._signals[1]
        async for first in receive:
            batch = [first]
            while len(batch) < self.settings.webhooks.batch_size:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                with trio.fail_after(STORAGE_STEP_TIMEOUT_S):
                    if await self.storage.enqueue_webhook_events(batch):
                        self.poke()
            except (StorageError, trio.TooSlowError) as err:
                self.dropped_signals += len(batch)
                log.warning("webhooks: %d events not queued (%s)", len(batch), type(err).__name__)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed every ``webhooks_poll_interval_s``; send whenever woken (a delivery finished,
        a redelivery, new outbox rows) or at that interval. Deliveries run in this nursery,
        so a slow receiver holds only its own slots, never the loop."""
        settings = self.settings
        limits = httpx.Limits(max_connections=settings.webhooks.max_concurrent)
        timeout = httpx.Timeout(settings.webhooks.timeout_s)
        async with (
            httpx.AsyncClient(
                timeout=timeout, limits=limits, follow_redirects=False, trust_env=False
            ) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._write_signals)
            task_status.started()
            next_feed = 0.0
            # the database down: a round fails every poll interval; logged rate-limited
            failures = FailureLog(log, "webhooks: storage round", clock=trio.current_time)
            while True:
                self._wake = trio.Event()
                try:
                    if trio.current_time() >= next_feed:
                        next_feed = trio.current_time() + settings.webhooks.poll_interval_s
                        await self._feed()
                    await self._send_due(client, nursery)
                except (StorageError, trio.TooSlowError) as err:  # try again next round
                    failures.failed(err)
                else:
                    failures.succeeded()
                with trio.move_on_after(max(0.0, next_feed - trio.current_time())):
                    await self._wake.wait()

    def render_prometheus(self) -> str:
        """Webhook counters for ``/metrics``: alert on ``failed`` and on disabled subscriptions."""
        lines = [
            "# HELP livechat_webhook_attempts_total Webhook delivery attempts, by outcome.",
            "# TYPE livechat_webhook_attempts_total counter",
        ]
        for outcome in ("delivered", "retry", "failed"):
            lines.append(
                f'livechat_webhook_attempts_total{{outcome="{outcome}"}} {self.attempts[outcome]}'
            )
        for name, help_text, value in (
            (
                "livechat_webhook_subscriptions_disabled_total",
                "Subscriptions disabled after failures in a row.",
                self.disabled_total,
            ),
            (
                "livechat_webhook_events_dropped_total",
                "Visitor/agent events not queued (queue full or storage error).",
                self.dropped_signals,
            ),
            ("livechat_webhook_in_flight", "Delivery attempts in flight now.", len(self._inflight)),
        ):
            kind = "gauge" if name.endswith("in_flight") else "counter"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"

    async def _feed(self) -> None:
        """Committed events into the outbox; a burst becomes one write per batch."""
        settings = self.settings
        while True:
            with trio.fail_after(STORAGE_STEP_TIMEOUT_S):
                _added, more = await self.storage.feed_webhooks(
                    limit=settings.webhooks.batch_size,
                    settle_s=settings.webhooks.settle_s,
                    expand=expand_event,
                )
            if not more:
                return

    async def _send_due(self, client: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        """Start the due deliveries that fit: ``webhooks_max_concurrent`` in all, and at most
        ``PER_SUBSCRIPTION_IN_FLIGHT`` per subscription (one slow receiver cannot take every
        slot from the other workspaces)."""
        room = self.settings.webhooks.max_concurrent - len(self._inflight)
        if room <= 0:
            return
        with trio.fail_after(STORAGE_STEP_TIMEOUT_S):
            due = await self.storage.due_webhook_deliveries(
                now=time.time(), limit=min(MAX_PAGE, room + len(self._inflight) + 50)
            )
        chosen: list[tuple[WebhookDelivery, WebhookSubscription]] = []
        per_sub = collections.Counter(self._per_sub)
        for delivery, sub in due:
            if len(chosen) >= room:
                break
            if delivery.id in self._inflight or per_sub[sub.id] >= PER_SUBSCRIPTION_IN_FLIGHT:
                continue
            per_sub[sub.id] += 1
            chosen.append((delivery, sub))
        if not chosen:
            return
        # A lease, not just memory: the read above may be stale (an attempt finished while it
        # ran), and other servers on the same database send too. Only what we took is sent.
        now = time.time()
        with trio.fail_after(STORAGE_STEP_TIMEOUT_S):
            taken = await self.storage.claim_webhook_deliveries(
                [d.id for d, _ in chosen],
                now=now,
                lease_until=now + 2 * self.settings.webhooks.timeout_s + STORAGE_STEP_TIMEOUT_S,
            )
        for delivery, sub in chosen:
            if delivery.id not in taken or delivery.id in self._inflight:
                continue
            self._inflight.add(delivery.id)
            self._per_sub[sub.id] += 1
            fresh = attrs.evolve(delivery, attempts=taken[delivery.id])
            nursery.start_soon(self._deliver, client, fresh, sub)

    async def _deliver(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, sub: WebhookSubscription
    ) -> None:
        try:
            await self._attempt(client, delivery, sub)
        except (StorageError, trio.TooSlowError) as err:
            # The attempt is not recorded: the delivery stays due and is sent again (at least
            # once, as documented); the receiver drops the repeat by its event id.
            log.warning("webhooks: attempt not recorded (%s)", type(err).__name__)
        finally:
            self._inflight.discard(delivery.id)
            self._per_sub[sub.id] -= 1
            if self._per_sub[sub.id] <= 0:
                del self._per_sub[sub.id]
            self.poke()

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, sub: WebhookSubscription
    ) -> None:
        status, error, latency_ms = await self._post(client, delivery, sub)
        now = time.time()
        attempt_no = delivery.attempts + 1
        ok = status is not None and 200 <= status < 300
        if ok:
            state, next_at = DeliveryState.DELIVERED, None
        elif now - delivery.created_at >= self.settings.webhooks.retry_window_s:
            state, next_at = DeliveryState.FAILED, None
        else:
            state = DeliveryState.PENDING
            next_at = now + next_delay_s(self.settings, attempt_no)
        attempt = WebhookAttempt(
            id=secrets.token_urlsafe(12),
            workspace_id=delivery.workspace_id,
            delivery_id=delivery.id,
            attempt=attempt_no,
            status_code=status,
            error=error,
            latency_ms=latency_ms,
            at=now,
        )
        self.attempts[
            "delivered" if ok else ("failed" if state is DeliveryState.FAILED else "retry")
        ] += 1
        with trio.fail_after(STORAGE_STEP_TIMEOUT_S):
            disabled = await self.storage.record_webhook_attempt(
                attempt,
                state=state,
                next_attempt_at=next_at,
                disable_after_failures=self.settings.webhooks.disable_after_failures,
            )
            if disabled is not None:
                self.disabled_total += 1
                log.warning("webhook %s disabled: %s", disabled.id, disabled.disabled_reason)
        if disabled is not None:
            await self._notify_disabled(disabled, attempt.at)

    async def _notify_disabled(self, sub: WebhookSubscription, at: float) -> None:
        """Queue the owners' notice right after the disabling commit. Shielded (a shutdown
        just after the commit still queues it) and bounded; a failure is logged, never raised:
        the subscription is disabled and audited whatever happens to its mail."""
        if self.on_disabled is None:
            return
        with trio.CancelScope(
            shield=True, deadline=trio.current_time() + self.settings.engine.storage_timeout_s
        ) as scope:
            try:
                await self.on_disabled(sub, at)
            except Exception:  # the edge of the callback: a lost notice, not a lost attempt
                log.warning("webhook %s: disabled notice not queued", sub.id, exc_info=True)
        if scope.cancelled_caught:
            log.warning("webhook %s: disabled notice not queued (timed out)", sub.id)

    async def _post(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, sub: WebhookSubscription
    ) -> tuple[int | None, str | None, float]:
        """One HTTP attempt: (status or None, fixed error reason or None, latency in ms)."""
        started = time.monotonic()
        allow = self.settings.webhooks.allow_private_targets
        try:
            with trio.fail_after(self.settings.webhooks.timeout_s):
                await check_target(sub.url, allow_private=allow)
        except WebhookTargetRefused:
            return None, "target_refused", (time.monotonic() - started) * 1000
        except trio.TooSlowError:
            return None, "dns_timeout", (time.monotonic() - started) * 1000
        body = delivery.payload.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Livechat-Event": delivery.event_type,
            "X-Livechat-Event-Id": delivery.event_id,
            "X-Livechat-Delivery": delivery.id,
            SIGNATURE_HEADER: signature_header(
                signing_secrets(sub, time.time()), int(time.time()), body
            ),
        }
        try:
            with trio.fail_after(self.settings.webhooks.timeout_s + 1):
                async with client.stream("POST", sub.url, content=body, headers=headers) as resp:
                    status = resp.status_code  # the body is not read: only the status counts
        except (httpx.TimeoutException, trio.TooSlowError):
            return None, "timeout", (time.monotonic() - started) * 1000
        except httpx.ConnectError:
            return None, "connect_failed", (time.monotonic() - started) * 1000
        except httpx.HTTPError:
            return None, "http_error", (time.monotonic() - started) * 1000
        except Exception:
            # The edge of one attempt: the URL and the peer are the admin's and the receiver's;
            # whatever they cause is a failed attempt (retried with backoff), never a crash.
            log.warning("webhooks: attempt failed unexpectedly", exc_info=True)
            return None, "request_failed", (time.monotonic() - started) * 1000
        error = None if 200 <= status < 300 else f"http_{status}"
        return status, error, (time.monotonic() - started) * 1000
