"""The durable outboxes delivered off the hot path: webhooks (``docs/webhooks.md``) and
outgoing mail, agent links and the inbox (``web.mail``).

Part of the ``Storage`` protocol (``storage.api``), which both backends implement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from storage.api_records import (
    Agent,
    AgentToken,
    Conversation,
    DeliveryState,
    InboxItem,
    InboxStatus,
    MailItem,
    MailStatus,
    PositionedEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)


class StorageDelivery(Protocol):
    """Webhook subscriptions and their outbox; mail outbox, agent links, inbox."""

    # webhooks (storage/_webhooks.py, docs/webhooks.md)
    async def create_webhook(
        self,
        workspace_id: str,
        *,
        url: str,
        event_types: Sequence[str],
        secret: str,
        description: str | None = None,
    ) -> WebhookSubscription: ...
    async def get_webhook(
        self, workspace_id: str, subscription_id: str
    ) -> WebhookSubscription | None: ...
    async def list_webhooks(self, workspace_id: str) -> list[WebhookSubscription]: ...
    async def update_webhook(
        self, workspace_id: str, subscription_id: str, **changes: Any
    ) -> WebhookSubscription: ...
    async def delete_webhook(self, workspace_id: str, subscription_id: str) -> None: ...
    async def feed_webhooks(
        self,
        *,
        limit: int,
        settle_s: float,
        expand: Callable[[PositionedEvent], Sequence[tuple[str, str, str]]],
    ) -> tuple[int, bool]:
        """Committed events after the durable cursor into the outbox (one transaction):
        (deliveries added, whether more events may wait past this batch)."""
        ...

    async def enqueue_webhook_events(self, items: Sequence[tuple[str, str, str, str]]) -> int:
        """Outbox rows for non-conversation events: (workspace, type, event id, payload)."""
        ...

    async def due_webhook_deliveries(
        self, *, now: float, limit: int
    ) -> list[tuple[WebhookDelivery, WebhookSubscription]]: ...
    async def claim_webhook_deliveries(
        self, delivery_ids: Sequence[str], *, now: float, lease_until: float
    ) -> dict[str, int]:
        """Lease due deliveries for an attempt (``next_attempt_at = lease_until``); returns
        the ids taken with their attempts so far."""
        ...

    async def record_webhook_attempt(
        self,
        attempt: WebhookAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: float | None,
        disable_after_failures: int,
    ) -> WebhookSubscription | None: ...
    async def list_webhook_deliveries(
        self, workspace_id: str, subscription_id: str, *, limit: int = 50
    ) -> list[WebhookDelivery]: ...
    async def get_webhook_delivery(
        self, workspace_id: str, delivery_id: str
    ) -> WebhookDelivery | None: ...
    async def list_webhook_attempts(
        self, workspace_id: str, delivery_id: str
    ) -> list[WebhookAttempt]: ...
    async def redeliver_webhook(self, workspace_id: str, delivery_id: str) -> WebhookDelivery: ...

    # outgoing mail, agent links, inbox (storage._mail)
    async def enqueue_mail(self, item: MailItem) -> bool: ...  # False: dedupe_key exists
    async def due_mail(self, now: float, *, limit: int = 20) -> list[MailItem]: ...
    async def next_mail_due_at(self) -> float | None: ...
    async def claim_mail(self, item: MailItem, *, lease_until: float) -> bool: ...
    async def mail_sent(self, mail_id: str, *, at: float) -> None: ...
    async def mail_attempt_failed(
        self, mail_id: str, *, error: str, retry_at: float | None
    ) -> None: ...
    async def list_mail(
        self, workspace_id: str, *, status: MailStatus | None = None, limit: int = 100
    ) -> list[MailItem]: ...
    async def prune_mail(self, *, before: float) -> int: ...  # sent/failed rows only
    async def create_agent_token(self, token: AgentToken) -> None: ...
    async def use_agent_token(
        self, token_hash: str, *, purposes: Sequence[str], now: float
    ) -> AgentToken | None: ...
    async def find_agents_by_email(self, email: str) -> list[Agent]: ...
    async def unscanned_inbox_conversations(
        self, *, since: float, limit: int = 100
    ) -> list[Conversation]: ...
    async def add_inbox_item(self, item: InboxItem, *, mail: MailItem | None) -> bool: ...
    async def list_inbox(
        self, workspace_id: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]: ...
    async def count_inbox(self, workspace_id: str, *, status: InboxStatus) -> int: ...
    async def get_inbox_item(self, workspace_id: str, conversation_id: str) -> InboxItem | None: ...
    async def update_inbox_item(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        now: float,
        changes: dict[str, Any],
        reply: MailItem | None = None,
    ) -> InboxItem | None: ...
