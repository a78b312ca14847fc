"""The audit log is a hash chain per workspace: edits, deletions and reorderings are found."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage import open_backend
from storage._base import SqlStorage, execute
from storage._sql import Q
from tests.storage.test_commands import cli

ENTRIES = 6


async def tamper_with(storage: SqlStorage, sql: str, *args: object) -> int:
    """What someone with write access to the database does behind the server's back."""
    return await storage._write(execute(Q(sql, args)))


async def _log(storage: SqlStorage, workspace_id: str, n: int = ENTRIES) -> None:
    for i in range(n):
        await storage.audit(
            workspace_id, actor="agent:a1", action=f"test.step{i}", details={"i": i, "x": 1.5}
        )


async def test_an_untouched_chain_verifies_and_links_each_entry_to_the_previous(
    storage: SqlStorage,
) -> None:
    ws = await storage.create_workspace(name="acme")
    other = await storage.create_workspace(name="globex")
    await _log(storage, ws.id)
    await _log(storage, other.id, 2)
    report = await storage.verify_audit(ws.id)
    assert report.ok and report.entries == ENTRIES and report.head_seq == ENTRIES
    entries = sorted((await storage.list_audit(ws.id)).items, key=lambda e: e.seq or 0)
    assert [e.seq for e in entries] == list(range(1, ENTRIES + 1))  # per workspace, from 1
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.hash
    assert report.head_hash == entries[-1].hash
    assert (await storage.verify_audit(other.id)).entries == 2
    assert set(await storage.audit_chains()) >= {ws.id, other.id}


@pytest.mark.parametrize(
    ("tamper", "broken_at", "words"),
    [
        ('UPDATE audit_log SET details=\'{"i":99,"x":1.5}\' WHERE seq=3', 3, "edited"),
        ("UPDATE audit_log SET actor='agent:someone-else' WHERE seq=4", 4, "edited"),
        ("DELETE FROM audit_log WHERE seq=2", 3, "missing"),
        (
            "UPDATE audit_log SET seq=CASE seq WHEN 2 THEN 3 ELSE 2 END WHERE seq IN (2,3)",
            2,
            "link",
        ),
        (f"DELETE FROM audit_log WHERE seq={ENTRIES}", ENTRIES, "newest entries were deleted"),
    ],
    ids=["edit-details", "edit-actor", "delete-middle", "reorder", "delete-newest"],
)
async def test_verify_names_the_first_broken_link_after_tampering(
    storage: SqlStorage, tamper: str, broken_at: int, words: str
) -> None:
    ws = await storage.create_workspace(name="acme")
    untouched = await storage.create_workspace(name="globex")
    await _log(storage, ws.id)
    await _log(storage, untouched.id, 3)
    assert await tamper_with(storage, tamper + " AND workspace_id=?", ws.id) >= 1
    report = await storage.verify_audit(ws.id)
    assert not report.ok
    assert report.broken_at == broken_at, report
    assert words in (report.problem or ""), report
    assert (await storage.verify_audit(untouched.id)).ok  # chains are per workspace


async def test_concurrent_writers_keep_one_unbroken_chain(storage: SqlStorage) -> None:
    """Concurrent transactions (several pooled connections on PostgreSQL) append one after the
    other: the chain head is locked for the transaction."""
    ws = await storage.create_workspace(name="acme")
    per_task, tasks = 8, 6

    async def writer(name: str) -> None:
        for i in range(per_task):
            await storage.audit(ws.id, actor=name, action="test.concurrent", details={"i": i})

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for t in range(tasks):
                nursery.start_soon(writer, f"w{t}")
    report = await storage.verify_audit(ws.id)
    assert report.ok, report
    assert report.entries == per_task * tasks == report.head_seq


async def _strip_chain(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """An export as written before the chain existed: audit rows without seq and hashes."""
    async for line in lines:
        item = json.loads(line)
        if item.get("table") == "audit_log":
            for column in ("seq", "prev_hash", "hash"):
                item["row"].pop(column)
            line = json.dumps(item) + "\n"
        yield line


async def test_entries_restored_from_an_older_backup_are_chained_in_time_order(
    storage: SqlStorage, tmp_path: Path
) -> None:
    ws = await storage.create_workspace(name="acme")
    await _log(storage, ws.id)
    async with open_backend(f"sqlite:///{tmp_path}/restored.db") as target:
        await target.import_jsonl(_strip_chain(storage.export_database_jsonl()))
        report = await target.verify_audit(ws.id)
        assert report.ok and report.entries == ENTRIES, report
        entries = sorted((await target.list_audit(ws.id)).items, key=lambda e: e.seq or 0)
        assert [e.action for e in entries] == [f"test.step{i}" for i in range(ENTRIES)]
        await target.audit(ws.id, actor="cli", action="test.after_restore")
        assert (await target.verify_audit(ws.id)).entries == ENTRIES + 1


async def test_a_backup_keeps_the_chain_and_still_verifies_after_restore(
    storage: SqlStorage, tmp_path: Path
) -> None:
    ws = await storage.create_workspace(name="acme")
    await _log(storage, ws.id)
    before = await storage.verify_audit(ws.id)
    async with open_backend(f"sqlite:///{tmp_path}/restored.db") as target:
        await target.import_jsonl(storage.export_database_jsonl())
        after = await target.verify_audit(ws.id)
    assert after.ok and (after.head_seq, after.head_hash) == (before.head_seq, before.head_hash)


async def test_audit_verify_cli_exits_1_naming_the_edited_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(url) as store:
        ws = await store.create_workspace(name="acme")
        await _log(store, ws.id)
        await store.purge_workspace((await store.create_workspace(name="gone")).id)
    assert await cli("audit", "verify", "--database-url", url) == 0
    out = capsys.readouterr().out
    assert f"workspace {ws.id}: ok, {ENTRIES} entries" in out
    assert "server: ok, 1 entries" in out  # the purge, server-wide

    async with open_backend(url) as store:
        edit = "UPDATE audit_log SET action='x' WHERE seq=4 AND workspace_id=?"
        await tamper_with(store, edit, ws.id)
        rows = await store._fetch("SELECT id FROM audit_log WHERE seq=4 AND workspace_id=?", ws.id)
    assert await cli("audit", "verify", "--database-url", url, "--workspace", ws.id) == 1
    captured = capsys.readouterr()
    assert f"BROKEN at entry 4 (id {rows[0]['id']})" in captured.out
    assert "edited" in captured.out
    assert "livechat audit: error:" in captured.err
    assert await cli("audit", "verify", "--database-url", url, "--workspace", "server") == 0
