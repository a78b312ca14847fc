"""Real erasure on SQLite: after erasing a visitor or purging a workspace, the database files
(WAL included) and a backup taken afterwards hold none of the erased text."""

from __future__ import annotations

import hashlib
from pathlib import Path

from storage import MasterKeyRing, open_backend
from storage._base import SqlStorage
from storage.crypto import new_master_key_text, parse_master_keys
from tests.storage.helpers import message
from tests.storage.test_commands import cli

ERASED_WORDS = ["xylophonicerasable", "quetzalforgotten"]
ERASED_NAME = "Ottoline Erasable-Visitor"
KEPT_WORD = "marmalade"


def _grep(paths: list[Path], needles: list[str]) -> list[str]:
    hits = []
    for path in paths:
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return hits


def _db_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith("live.db")]


async def _chat(store: SqlStorage, workspace_id: str, name: str, words: list[str]) -> str:
    token_hash = hashlib.sha256(name.encode()).hexdigest()  # what the server stores
    visitor = await store.create_visitor(workspace_id, token_hash=token_hash)
    await store.update_visitor(workspace_id, visitor.id, name=name, email=f"{name[:5]}@ex.org")
    conv = await store.create_conversation(workspace_id, visitor_id=visitor.id)
    for i, word in enumerate(words * 20):  # enough rows to span several pages and segments
        await store.append(message(conv, f"message {i} about {word} and more"))
    return visitor.id


async def test_erased_visitor_leaves_no_bytes_in_the_database_files_or_a_later_backup(
    tmp_path: Path,
) -> None:
    """Without encryption (the worst case: plaintext bodies), so the grep sees real bytes."""
    url = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(url) as store:
        ws = await store.create_workspace(name="acme")
        erased = await _chat(store, ws.id, ERASED_NAME, ERASED_WORDS)
        await _chat(store, ws.id, "Kept Visitor", [KEPT_WORD])
        assert _grep(_db_files(tmp_path), ERASED_WORDS)  # the grep does find plaintext bodies
        assert await store.search(ws.id, ERASED_WORDS[0])

        await store.erase_visitor(ws.id, erased)

        assert await store.search(ws.id, ERASED_WORDS[0]) == []
        assert [h.body for h in await store.search(ws.id, KEPT_WORD)]  # the index still works
        assert (tmp_path / "live.db-wal").stat().st_size == 0  # old frames are gone
        # While the server runs: database, WAL and shared-memory files.
        assert _grep(_db_files(tmp_path), [*ERASED_WORDS, ERASED_NAME]) == []
        assert _grep(_db_files(tmp_path), [KEPT_WORD])  # only the erased visitor is gone
    backup = tmp_path / "after.backup"
    assert await cli("backup", "--database-url", url, "--out", str(backup)) == 0
    assert _grep([backup, *_db_files(tmp_path)], [*ERASED_WORDS, ERASED_NAME]) == []


async def test_encrypted_bodies_and_names_never_reach_the_files_or_a_backup(
    tmp_path: Path,
) -> None:
    """With a master key, message bodies and visitors' names are sealed: neither the database
    files nor a backup hold them, before or after an erasure; search still finds whole words."""
    url = f"sqlite:///{tmp_path}/live.db"
    key_file = tmp_path / "master.key"
    key_file.write_text(new_master_key_text())
    ring = MasterKeyRing(parse_master_keys(key_file.read_text()))
    secrets = [*ERASED_WORDS, ERASED_NAME, KEPT_WORD, "Kept Visitor"]
    async with open_backend(url, keyring=ring) as store:
        ws = await store.create_workspace(name="acme")
        erased = await _chat(store, ws.id, ERASED_NAME, ERASED_WORDS)
        await _chat(store, ws.id, "Kept Visitor", [KEPT_WORD])
        hits = await store.search(ws.id, f"{KEPT_WORD.upper()} more")
        assert len(hits) == 20 and f"\ue000{KEPT_WORD}\ue001" in hits[0].snippet
        assert hits[0].body.startswith("message ")
        assert _grep(_db_files(tmp_path), secrets) == []
        before = tmp_path / "before.backup"
        args = ("--database-url", url, "--master-key-file", str(key_file))
        assert await cli("backup", *args, "--out", str(before)) == 0
        assert _grep([before], secrets) == []
        await store.erase_visitor(ws.id, erased)
        assert await store.search(ws.id, ERASED_WORDS[1]) == []
    assert _grep(_db_files(tmp_path), secrets) == []


async def test_purged_workspace_leaves_no_bytes_in_the_database_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(url) as store:  # even without encryption
        gone = await store.create_workspace(name="gone")
        kept = await store.create_workspace(name="kept")
        await _chat(store, gone.id, ERASED_NAME, ERASED_WORDS)
        await _chat(store, kept.id, "Kept Visitor", [KEPT_WORD])
        await store.purge_workspace(gone.id)
        assert _grep(_db_files(tmp_path), [*ERASED_WORDS, ERASED_NAME]) == []
        assert _grep(_db_files(tmp_path), [KEPT_WORD])


async def test_erasure_removes_rows_and_search_entries_on_both_backends(
    storage: SqlStorage,
) -> None:
    """On PostgreSQL the rows and their search entries are gone from every query; what VACUUM
    does with the dead tuples' bytes is described in docs/security.md."""
    ws = await storage.create_workspace(name="acme")
    erased = await _chat(storage, ws.id, ERASED_NAME, ERASED_WORDS)
    await storage.erase_visitor(ws.id, erased)
    assert await storage.search(ws.id, ERASED_WORDS[0]) == []
    rows = await storage._fetch(
        "SELECT count(*) AS n FROM events WHERE body LIKE ?", f"%{ERASED_WORDS[0]}%"
    )
    assert rows[0]["n"] == 0
