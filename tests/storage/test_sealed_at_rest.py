"""Encryption at rest reaches what used to stay plaintext: chat files (bytes and names), webhook
secrets and queued payloads, mail in the outbox, an offline message's name and email. Each test
greps the raw database — SQLite's files (WAL and shared memory included) and the file store, or
a ``pg_dump`` of the PostgreSQL schema — for the plaintext. Both backends."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import (
    AppendRequest,
    Attachment,
    AuthorType,
    EventKind,
    MailItem,
    MasterKeyRing,
    open_backend,
)
from storage._base import SqlStorage
from storage.crypto import new_master_key_text, parse_master_keys
from tests.storage.rawdb import raw_database
from tests.storage.test_commands import cli
from tests.storage.test_encryption import ring
from web.webhooks import expand_event

MARKS = {
    "file_bytes": b"GIF89a-secret-pixels-kumquat-0913",
    "file_name": "payroll-kumquat-0913.gif",
    "webhook_secret": "whsec-kumquat-signing-0913",
    "rotated_secret": "whsec-kumquat-rotated-0913",
    "body": "my card ends in kumquat-0913-body",
    "offline_name": "Philomena Kumquat-Offline",
    "offline_email": "philomena.kumquat@offline.example",
    "mail_to": "recipient.kumquat@mail.example",
    "mail_subject": "Your chat transcript kumquat-subject",
    "mail_text": "transcript text kumquat-mailbody",
    "identified": "identified.kumquat@visitor.example",
}


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    async with open_backend(database_url, files_dir=str(tmp_path / "files")) as s:
        yield s


def plaintext_in(raw: bytes) -> list[str]:
    texts = {k: v if isinstance(v, bytes) else v.encode() for k, v in MARKS.items()}
    return sorted(k for k, v in texts.items() if v in raw)


async def _fill(store: SqlStorage) -> dict[str, str]:
    """One workspace with every kind of value the tests look for; returns their ids."""
    ws = await store.create_workspace(name="acme")
    visitor = await store.create_visitor(ws.id, token_hash=os.urandom(8).hex())
    conv = await store.create_conversation(ws.id, visitor_id=visitor.id)
    sub = await store.create_webhook(
        ws.id,
        url="https://hooks.example/in",
        event_types=["message.created", "offline_message.created", "visitor.identified"],
        secret=MARKS["webhook_secret"],
    )
    await store.update_webhook(
        ws.id,
        sub.id,
        secret=MARKS["rotated_secret"],
        previous_secret=MARKS["webhook_secret"],
        previous_secret_expires_at=4e9,
    )
    file = Attachment(
        id="file-kumquat-0001",
        workspace_id=ws.id,
        uploader_type=AuthorType.VISITOR,
        uploader_id=visitor.id,
        visitor_id=visitor.id,
        conversation_id=None,
        name=MARKS["file_name"],
        content_type="image/gif",
        size=len(MARKS["file_bytes"]),
        created_at=1000.0,
    )
    await store.add_attachment(file, MARKS["file_bytes"], max_storage_bytes=10_000)
    await store.append(_event(ws.id, conv.id, visitor.id, EventKind.MESSAGE, MARKS["body"]))
    offline = await store.create_conversation(ws.id, visitor_id=visitor.id)
    data = {"name": MARKS["offline_name"], "email": MARKS["offline_email"]}
    await store.append(
        _event(ws.id, offline.id, visitor.id, EventKind.OFFLINE_MESSAGE, "call me", data=data)
    )
    assert await store.feed_webhooks(limit=100, settle_s=5.0, expand=expand_event) == (2, False)
    payload = f'{{"type":"visitor.identified","email":"{MARKS["identified"]}"}}'
    items = [(ws.id, "visitor.identified", f"evt_{visitor.id}_identified", payload)]
    assert await store.enqueue_webhook_events(items) == 1
    mail = MailItem(
        id="mail-kumquat-0001",
        workspace_id=ws.id,
        conversation_id=conv.id,
        kind="transcript",
        dedupe_key=None,
        recipient=MARKS["mail_to"],
        subject=MARKS["mail_subject"],
        text_body=MARKS["mail_text"],
        html_body=f"<p>{MARKS['mail_text']}</p>",
        created_at=1000.0,
    )
    assert await store.enqueue_mail(mail)
    return {"ws": ws.id, "sub": sub.id, "file": file.id, "conv": conv.id, "offline": offline.id}


def _event(
    ws: str, conv: str, visitor: str, kind: EventKind, body: str, data: dict[str, str] | None = None
) -> AppendRequest:
    return AppendRequest(
        workspace_id=ws,
        conversation_id=conv,
        kind=kind,
        author_type=AuthorType.VISITOR,
        author_id=visitor,
        body=body,
        data=data or {},
    )


async def _reads_back_plaintext(store: SqlStorage, ids: dict[str, str]) -> None:
    """What the server reads is the plaintext, whatever is stored."""
    ws = ids["ws"]
    got = await store.get_attachment(ws, ids["file"])
    assert got is not None and got.name == MARKS["file_name"]
    assert await store.read_attachment(got) == MARKS["file_bytes"]
    sub = await store.get_webhook(ws, ids["sub"])
    assert sub is not None
    assert (sub.secret, sub.previous_secret) == (MARKS["rotated_secret"], MARKS["webhook_secret"])
    due = await store.due_webhook_deliveries(now=4e9, limit=10)
    payloads = " ".join(d.payload for d, _ in due)
    for mark in ("body", "offline_name", "offline_email", "identified"):
        assert MARKS[mark] in payloads, mark
    assert {s.secret for _, s in due} == {MARKS["rotated_secret"]}  # what signs them
    listed = await store.list_webhook_deliveries(ws, ids["sub"])
    assert MARKS["body"] in " ".join(d.payload for d in listed)
    [mail] = await store.due_mail(4e9)
    assert (mail.recipient, mail.subject) == (MARKS["mail_to"], MARKS["mail_subject"])
    assert mail.text_body == MARKS["mail_text"] and MARKS["mail_text"] in mail.html_body
    assert [m.recipient for m in await store.list_mail(ws)] == [MARKS["mail_to"]]
    [offline] = await store.history(ws, ids["offline"])
    assert dict(offline.data) == {"name": MARKS["offline_name"], "email": MARKS["offline_email"]}


async def test_files_webhooks_mail_and_offline_contacts_are_sealed_at_rest(
    store: SqlStorage, database_url: str, tmp_path: Path
) -> None:
    await store.use_keys(ring(new_master_key_text()))
    ids = await _fill(store)
    await _reads_back_plaintext(store, ids)
    assert plaintext_in(raw_database(database_url, tmp_path)) == []
    # The files' size and sniffed type stay plaintext: the quota and the download need them.
    rows = await store._fetch("SELECT name, content_type, size FROM attachments")
    # The name under the visitor's key (the key vault: an erasure reaches old backups).
    assert rows[0]["name"].startswith("lc2:") and rows[0]["content_type"] == "image/gif"
    assert rows[0]["size"] == len(MARKS["file_bytes"])


async def test_without_encryption_the_same_grep_finds_every_value(
    store: SqlStorage, database_url: str, tmp_path: Path
) -> None:
    """The grep is able to see the values: without a master key they are all there."""
    ids = await _fill(store)
    await _reads_back_plaintext(store, ids)
    assert plaintext_in(raw_database(database_url, tmp_path)) == sorted(MARKS)


async def test_keys_migrate_seals_rows_and_files_stored_before_encryption(
    store: SqlStorage, database_url: str, tmp_path: Path
) -> None:
    ids = await _fill(store)  # stored in plaintext, as before this version
    await store.use_keys(ring(new_master_key_text()))
    await _reads_back_plaintext(store, ids)  # old plaintext reads as it is
    sealed = await store.seal_plaintext()  # what `livechat keys migrate` and a start run
    assert sealed >= 7
    assert plaintext_in(raw_database(database_url, tmp_path)) == []
    await _reads_back_plaintext(store, ids)
    assert await store.seal_plaintext() == 0  # nothing left; a second run changes nothing


async def test_a_large_file_is_sealed_and_served_whole(
    store: SqlStorage, database_url: str, tmp_path: Path
) -> None:
    """Files past ``CRYPT_IN_THREAD_BYTES`` are sealed in a worker thread: same result."""
    await store.use_keys(ring(new_master_key_text()))
    ws = await store.create_workspace(name="acme")
    visitor = await store.create_visitor(ws.id, token_hash="t")
    data = b"%PDF-1.7 " + b"kumquat-large-file " * 20_000  # ~380 KB
    file = Attachment(
        id="file-kumquat-large",
        workspace_id=ws.id,
        uploader_type=AuthorType.VISITOR,
        uploader_id=visitor.id,
        visitor_id=visitor.id,
        conversation_id=None,
        name="big.pdf",
        content_type="application/pdf",
        size=len(data),
        created_at=1000.0,
    )
    await store.add_attachment(file, data, max_storage_bytes=None)
    assert b"kumquat-large-file" not in raw_database(database_url, tmp_path)
    assert await store.read_attachment(file) == data
    lines = [line async for line in store.export_jsonl(ws.id)]
    assert any(base64.b64encode(data).decode() in line for line in lines)  # the customer's copy


async def test_livechat_keys_migrate_seals_old_rows_and_files_on_disk(
    database_url: str, tmp_path: Path
) -> None:
    """The command an operator runs: old plaintext rows and files are sealed; the server reads
    them afterwards with the same master key."""
    files = str(tmp_path / "files")
    async with open_backend(database_url, files_dir=files) as old:
        ids = await _fill(old)  # a database from before encryption
    assert plaintext_in(raw_database(database_url, tmp_path)) == sorted(MARKS)
    key_file = tmp_path / "master.key"
    key_file.write_text(new_master_key_text() + "\n")
    args = ("--database-url", database_url, "--master-key-file", str(key_file))
    assert await cli("keys", "migrate", *args, "--files-dir", files) == 0
    assert plaintext_in(raw_database(database_url, tmp_path)) == []
    keyring = MasterKeyRing(parse_master_keys(key_file.read_text()))
    async with open_backend(database_url, files_dir=files, keyring=keyring) as new:
        await _reads_back_plaintext(new, ids)
