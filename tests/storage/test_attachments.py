"""Files in chats, in storage (both backends): rows under the quota, binding rules, and bytes that
go with their rows through retention, erasure, purge, the unsent sweep and export/import."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import (
    AppendRequest,
    Attachment,
    AuthorType,
    EventKind,
    QuotaExceeded,
    RestoreError,
    open_backend,
)
from storage._base import SqlStorage

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture
async def store(database_url: str, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    async with open_backend(database_url, files_dir=str(tmp_path / "files")) as s:
        yield s


def _file(ws: str, visitor: str, *, n: int = 0, size: int = len(PNG), **kw: Any) -> Attachment:
    values: dict[str, Any] = {
        "id": f"file-{n:04d}-abcdefgh",
        "workspace_id": ws,
        "uploader_type": AuthorType.VISITOR,
        "uploader_id": visitor,
        "visitor_id": visitor,
        "conversation_id": None,
        "name": "shot.png",
        "content_type": "image/png",
        "size": size,
        "created_at": 1000.0,
    }
    values.update(kw)
    return Attachment(**values)


async def _chat(store: SqlStorage, ws: str) -> tuple[str, str]:
    visitor = await store.create_visitor(ws, token_hash=os.urandom(8).hex())
    conv = await store.create_conversation(ws, visitor_id=visitor.id)
    await store.append(
        AppendRequest(
            workspace_id=ws,
            conversation_id=conv.id,
            kind=EventKind.MESSAGE,
            author_type=AuthorType.VISITOR,
            author_id=visitor.id,
            body="hi",
        )
    )
    return visitor.id, conv.id


def _on_disk(tmp_path: Path, file_id: str) -> bool:
    return (tmp_path / "files" / file_id).exists()


async def test_bytes_are_private_and_quota_refuses_without_leaving_bytes(
    store: SqlStorage, tmp_path: Path
) -> None:
    ws = await store.create_workspace(name="W")
    visitor, _conv = await _chat(store, ws.id)
    first = await store.add_attachment(_file(ws.id, visitor), PNG, max_storage_bytes=80)
    assert await store.get_attachment(ws.id, first.id) == first
    assert await store.read_attachment(first) == PNG
    assert stat.S_IMODE((tmp_path / "files" / first.id).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "files").stat().st_mode) == 0o700
    with pytest.raises(QuotaExceeded):
        await store.add_attachment(_file(ws.id, visitor, n=1), PNG, max_storage_bytes=80)
    assert not _on_disk(tmp_path, _file(ws.id, visitor, n=1).id)
    assert await store.attachment_usage(ws.id) == len(PNG)
    other = await store.create_workspace(name="Other")
    assert await store.get_attachment(other.id, first.id) is None  # tenancy


async def test_only_the_uploaders_own_files_bind_to_its_chat(store: SqlStorage) -> None:
    ws = await store.create_workspace(name="W")
    visitor, conv = await _chat(store, ws.id)
    stranger, other_conv = await _chat(store, ws.id)
    mine = await store.add_attachment(_file(ws.id, visitor), PNG, max_storage_bytes=None)
    theirs = await store.add_attachment(_file(ws.id, stranger, n=1), PNG, max_storage_bytes=None)

    def bind(ids: list[str], who: str, conversation: str) -> Any:
        return store.bind_attachments(
            ws.id,
            ids,
            conversation_id=conversation,
            visitor_id=who,
            uploader_type=AuthorType.VISITOR,
            uploader_id=who,
        )

    assert [a.id for a in await bind([mine.id, theirs.id], visitor, conv)] == [mine.id]
    bound = await store.get_attachment(ws.id, mine.id)
    assert bound is not None and bound.conversation_id == conv and bound.sent_at is not None
    assert [a.id for a in await bind([mine.id], visitor, conv)] == [mine.id]  # a retry
    assert await bind([mine.id], stranger, other_conv) == []  # not theirs, nor that chat's


async def test_retention_erasure_purge_and_sweep_delete_the_bytes(
    store: SqlStorage, tmp_path: Path
) -> None:
    ws = await store.create_workspace(name="W")
    visitor, conv = await _chat(store, ws.id)
    sent = await store.add_attachment(_file(ws.id, visitor), PNG, max_storage_bytes=None)
    await store.bind_attachments(
        ws.id,
        [sent.id],
        conversation_id=conv,
        visitor_id=visitor,
        uploader_type=AuthorType.VISITOR,
        uploader_id=visitor,
    )
    # Retention: the chat is old, its file goes with it.
    assert await store.purge_conversations_older_than(ws.id, days=0) == 1
    assert not _on_disk(tmp_path, sent.id)
    assert await store.get_attachment(ws.id, sent.id) is None

    # Erasure: everything of the visitor, sent or not.
    visitor2, _ = await _chat(store, ws.id)
    unsent = await store.add_attachment(_file(ws.id, visitor2, n=2), PNG, max_storage_bytes=None)
    await store.erase_visitor(ws.id, visitor2)
    assert not _on_disk(tmp_path, unsent.id)

    # The sweep: an upload never sent, older than the TTL.
    visitor3, _ = await _chat(store, ws.id)
    stale = await store.add_attachment(
        _file(ws.id, visitor3, n=3, created_at=0.0), PNG, max_storage_bytes=None
    )
    assert await store.purge_unsent_attachments(older_than_s=3600) == 1
    assert not _on_disk(tmp_path, stale.id)

    # Workspace purge.
    last = await store.add_attachment(_file(ws.id, visitor3, n=4), PNG, max_storage_bytes=None)
    await store.purge_workspace(ws.id)
    assert not _on_disk(tmp_path, last.id)
    assert os.listdir(tmp_path / "files") == []


async def _lines(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_export_carries_the_bytes_and_import_restores_them(
    store: SqlStorage, tmp_path: Path
) -> None:
    ws = await store.create_workspace(name="W")
    visitor, _conv = await _chat(store, ws.id)
    kept = await store.add_attachment(_file(ws.id, visitor), PNG, max_storage_bytes=None)
    lines = [line async for line in store.export_jsonl(ws.id)]
    assert json.loads(lines[-1])["files"] == 1
    assert any(json.loads(line).get("file", {}).get("id") == kept.id for line in lines)

    async with open_backend(
        f"sqlite:///{tmp_path}/restored.db", files_dir=str(tmp_path / "restored-files")
    ) as target:
        await target.import_jsonl(_lines(lines))
        restored = await target.get_attachment(ws.id, kept.id)
        assert restored is not None and await target.read_attachment(restored) == PNG

    # A file line without its row is refused, and nothing of it stays on disk.
    forged = [*lines[:-1], json.dumps({"file": {"id": "forged-file-id", "data": "AAAA"}}) + "\n"]
    forged.append(lines[-1])
    async with open_backend(
        f"sqlite:///{tmp_path}/refused.db", files_dir=str(tmp_path / "refused-files")
    ) as target:
        with pytest.raises(RestoreError):
            await target.import_jsonl(_lines(forged))
    assert not (tmp_path / "refused-files").exists() or not os.listdir(tmp_path / "refused-files")
