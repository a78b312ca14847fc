"""Erasing a visitor also deletes the webhook deliveries (queued or logged, with their attempts)
and the mail about their conversations; other visitors' stay. Both backends; the raw database
(SQLite's files, or a ``pg_dump``) no longer holds the erased visitor's text."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import (
    AppendRequest,
    AuthorType,
    DeliveryState,
    EventKind,
    MailItem,
    WebhookAttempt,
    open_backend,
)
from storage._base import SqlStorage
from storage._sql import Program, Q
from storage.schema import migrations
from tests.storage.rawdb import raw_database
from web.webhooks import expand_event

ERASED = "zanzibar-erased-0417"
KEPT = "marmoset-kept-0417"


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    async with open_backend(database_url, files_dir=str(tmp_path / "files")) as s:
        yield s


async def _visitor_chat(store: SqlStorage, ws: str, word: str) -> tuple[str, str]:
    visitor = await store.create_visitor(ws, token_hash=os.urandom(8).hex())
    conv = await store.create_conversation(ws, visitor_id=visitor.id)
    await store.append(
        AppendRequest(
            workspace_id=ws,
            conversation_id=conv.id,
            kind=EventKind.MESSAGE,
            author_type=AuthorType.VISITOR,
            author_id=visitor.id,
            body=f"please call {word}",
        )
    )
    mail = MailItem(
        id=f"mail-{word}",
        workspace_id=ws,
        conversation_id=conv.id,
        kind="transcript",
        dedupe_key=None,
        recipient=f"{word}@mail.example",
        subject=f"transcript {word}",
        text_body=f"you wrote: please call {word}",
        html_body="",
        created_at=1000.0,
    )
    assert await store.enqueue_mail(mail)
    return visitor.id, conv.id


async def test_erasure_deletes_the_visitors_webhook_deliveries_and_mail(
    store: SqlStorage,
    database_url: str,
    tmp_path: Path,
) -> None:
    ws = (await store.create_workspace(name="acme")).id
    sub = await store.create_webhook(
        ws, url="https://hooks.example/in", event_types=["message.created"], secret="k"
    )
    erased, erased_conv = await _visitor_chat(store, ws, ERASED)
    _, kept_conv = await _visitor_chat(store, ws, KEPT)
    assert await store.feed_webhooks(limit=100, settle_s=5.0, expand=expand_event) == (2, False)
    deliveries = await store.list_webhook_deliveries(ws, sub.id)
    by_conv = {d.conversation_id: d for d in deliveries}
    assert set(by_conv) == {erased_conv, kept_conv}
    # One of the erased visitor's deliveries was attempted (logged) already.
    attempt = WebhookAttempt(
        id="attempt-1",
        workspace_id=ws,
        delivery_id=by_conv[erased_conv].id,
        attempt=1,
        status_code=500,
        error="http_500",
        latency_ms=3.0,
        at=1000.0,
    )
    await store.record_webhook_attempt(
        attempt, state=DeliveryState.PENDING, next_attempt_at=2000.0, disable_after_failures=10
    )
    assert ERASED.encode() in raw_database(database_url, tmp_path)  # the grep can see it

    await store.erase_visitor(ws, erased)

    assert [d.conversation_id for d in await store.list_webhook_deliveries(ws, sub.id)] == [
        kept_conv
    ]
    assert await store.list_webhook_attempts(ws, by_conv[erased_conv].id) == []
    assert [m.conversation_id for m in await store.list_mail(ws)] == [kept_conv]
    [entry] = [e for e in (await store.list_audit(ws)).items if e.action == "visitor.erased"]
    assert entry.details["webhook_deliveries"] == 1 and entry.details["mail"] == 1
    raw = raw_database(database_url, tmp_path)
    assert ERASED.encode() not in raw
    assert KEPT.encode() in raw  # only the erased visitor's are gone


async def test_deliveries_queued_before_the_migration_get_their_conversation(
    store: SqlStorage,
) -> None:
    """Migration 0010 takes the conversation of deliveries already queued from their payload,
    so an erasure reaches them too."""
    ws = (await store.create_workspace(name="acme")).id
    await store.create_webhook(
        ws, url="https://hooks.example/in", event_types=["message.created"], secret="k"
    )
    _, conv = await _visitor_chat(store, ws, KEPT)
    await store.feed_webhooks(limit=100, settle_s=5.0, expand=expand_event)
    await store._write(_run(Q("UPDATE webhook_deliveries SET conversation_id=NULL")))
    [migration] = [m for m in migrations(store.dialect.name) if m.name == "erasure_deliveries"]
    [backfill] = re.findall(r"^UPDATE .*?;", migration.sql, flags=re.M | re.S)
    await store._write(_run(Q(backfill.rstrip(";"))))
    rows = await store._fetch("SELECT conversation_id FROM webhook_deliveries")
    assert rows == [{"conversation_id": conv}]


def _run(q: Q) -> Program[None]:
    yield q


async def test_retention_deletes_the_deliveries_and_mail_of_the_conversations_it_deletes(
    database_url: str, tmp_path: Path
) -> None:
    now = [1_000_000.0]
    files = str(tmp_path / "files")
    async with open_backend(database_url, files_dir=files, clock=lambda: now[0]) as store:
        ws = (await store.create_workspace(name="acme")).id
        sub = await store.create_webhook(
            ws, url="https://hooks.example/in", event_types=["message.created"], secret="k"
        )
        await _visitor_chat(store, ws, ERASED)
        await store.feed_webhooks(limit=100, settle_s=5.0, expand=expand_event)
        now[0] += 10 * 86400.0
        _, kept_conv = await _visitor_chat(store, ws, KEPT)
        await store.feed_webhooks(limit=100, settle_s=5.0, expand=expand_event)

        assert await store.purge_conversations_older_than(ws, days=5) == 1

        assert [d.conversation_id for d in await store.list_webhook_deliveries(ws, sub.id)] == [
            kept_conv
        ]
        assert [m.conversation_id for m in await store.list_mail(ws)] == [kept_conv]
        [entry] = [e for e in (await store.list_audit(ws)).items if e.action == "retention.purge"]
        assert entry.details["webhook_deliveries"] == 1 and entry.details["mail"] == 1
