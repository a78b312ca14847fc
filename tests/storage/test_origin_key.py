"""Conversation origin keys (both backends): a start retried with the same key, even racing
or after the database was reopened, finds the one conversation it opened."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage import Conversation, NotFound, open_backend
from storage._base import SqlStorage
from tests.storage.conftest import Opener


async def test_same_origin_key_opens_one_conversation_even_racing_and_after_reopen(
    storage: SqlStorage, open_store: Opener
) -> None:
    ws = await storage.create_workspace(name="Acme")
    other_ws = await storage.create_workspace(name="Globex")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    other_visitor = await storage.create_visitor(other_ws.id, token_hash=None)
    key = "offline_message:v:c-1"

    opened: list[Conversation] = []

    async def start() -> None:
        opened.append(
            await storage.create_conversation(ws.id, visitor_id=visitor.id, origin_key=key)
        )

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(start)
    assert len({c.id for c in opened}) == 1
    assert opened[0].origin_key == key
    assert await storage.find_conversation_by_origin(ws.id, key) == opened[0]

    async with open_store() as again:
        retried = await again.create_conversation(ws.id, visitor_id=visitor.id, origin_key=key)
    assert retried.id == opened[0].id
    assert len(await storage.list_visitor_conversations(ws.id, visitor.id)) == 1

    # Keys are per workspace; no key means a new conversation every time.
    foreign = await storage.create_conversation(
        other_ws.id, visitor_id=other_visitor.id, origin_key=key
    )
    assert foreign.id != opened[0].id
    assert await storage.find_conversation_by_origin(other_ws.id, "nope") is None
    plain = [await storage.create_conversation(ws.id, visitor_id=visitor.id) for _ in range(2)]
    assert plain[0].id != plain[1].id and plain[0].origin_key is None
    with pytest.raises(NotFound):
        await storage.create_conversation(ws.id, visitor_id=other_visitor.id, origin_key="k2")


async def test_backup_keeps_origin_keys_and_older_backups_without_them_restore(
    storage: SqlStorage, tmp_path: Path
) -> None:
    ws = await storage.create_workspace(name="Acme")
    visitor = await storage.create_visitor(ws.id, token_hash=None)
    opened = await storage.create_conversation(ws.id, visitor_id=visitor.id, origin_key="k-1")
    exported = [line async for line in storage.export_jsonl(ws.id)]
    assert any('"origin_key":"k-1"' in line for line in exported)

    async def lines(source: list[str]) -> AsyncIterator[str]:
        for line in source:
            yield line

    async with open_backend(f"sqlite:///{tmp_path}/restored.db") as target:
        await target.import_jsonl(lines(exported))
        retried = await target.create_conversation(ws.id, visitor_id=visitor.id, origin_key="k-1")
        assert retried.id == opened.id

    # A backup written before origin keys existed has no such column: it restores as NULL.
    older = []
    for line in exported:
        record = json.loads(line)
        if record.get("table") == "conversations":
            del record["row"]["origin_key"]
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        older.append(line)
    async with open_backend(f"sqlite:///{tmp_path}/older.db") as target:
        await target.import_jsonl(lines(older))
        restored = await target.get_conversation(ws.id, opened.id)
        assert restored is not None and restored.origin_key is None
