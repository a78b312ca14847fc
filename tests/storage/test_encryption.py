"""Encryption at rest: visitors' personal data is sealed with per-workspace data keys wrapped by
a master key; the master key rotates under traffic without losing anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from storage import EncryptionError, MasterKeyRing, open_backend
from storage._base import SqlStorage
from storage.crypto import default_key_file, new_master_key_text, parse_master_keys
from tests.storage.conftest import Opener
from tests.storage.helpers import message
from tests.storage.test_commands import cli

NAME = "Zebulon Quixotic-Plaintext"
EMAIL = "zebulon.quixotic@plaintext.example"
ATTRIBUTE = "loyalty-tier-unobtainium"
IP = "203.0.113.77"


def ring(*texts: str) -> MasterKeyRing:
    return MasterKeyRing(parse_master_keys(",".join(texts)))


async def _visitor_with_personal_data(storage: SqlStorage, workspace_id: str) -> str:
    visitor = await storage.create_visitor(workspace_id, token_hash="t1", ip=IP)
    await storage.update_visitor(
        workspace_id, visitor.id, name=NAME, email=EMAIL, attributes={"tier": ATTRIBUTE}
    )
    return visitor.id


def _files_holding(directory: Path, needles: list[str]) -> list[str]:
    found = []
    for path in directory.iterdir():
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return found


async def test_visitor_personal_data_is_not_in_the_database_files(tmp_path: Path) -> None:
    key = new_master_key_text()
    url = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(url, keyring=ring(key)) as store:
        ws = await store.create_workspace(name="acme")
        visitor_id = await _visitor_with_personal_data(store, ws.id)
        got = await store.get_visitor(ws.id, visitor_id)
        assert got is not None
        assert (got.name, got.email, got.ip) == (NAME, EMAIL, IP)
        assert got.attributes == {"tier": ATTRIBUTE}
        # The database files, WAL included, while the server runs and after it stopped.
        assert _files_holding(tmp_path, [NAME, EMAIL, ATTRIBUTE, IP]) == []
    assert _files_holding(tmp_path, [NAME, EMAIL, ATTRIBUTE, IP]) == []

    with pytest.raises(EncryptionError, match="master key"):
        async with open_backend(url):
            pass
    with pytest.raises(EncryptionError):
        async with open_backend(url, keyring=ring(new_master_key_text())) as wrong:
            await wrong.get_visitor(ws.id, visitor_id)


async def test_sealed_columns_hold_no_plaintext_on_either_backend(storage: SqlStorage) -> None:
    await storage.use_keys(ring(new_master_key_text()))
    ws = await storage.create_workspace(name="acme")
    visitor_id = await _visitor_with_personal_data(storage, ws.id)
    rows = await storage._fetch(
        "SELECT name, email, attributes, ip FROM visitors WHERE id=?", visitor_id
    )
    # Sealed with the visitor's own key (the vault): an erasure destroys it.
    assert all(str(v).startswith(f"lc2:{visitor_id}:") for v in rows[0].values()), rows
    assert (await storage.find_visitor_by_token_hash(ws.id, "t1")).name == NAME  # type: ignore[union-attr]
    lines = [line async for line in storage.export_jsonl(ws.id)]
    assert any(EMAIL in line for line in lines)  # the customer's export is readable
    csv = "".join([line async for line in storage.export_csv(ws.id)])
    assert "lc1:" not in csv and "lc2:" not in csv


async def test_seal_and_unseal_bind_workspace_and_purpose_and_die_with_the_workspace(
    storage: SqlStorage,
) -> None:
    """The API other features (IdP client secrets, TOTP seeds) store their secrets with."""
    await storage.use_keys(ring(new_master_key_text()))
    ws = await storage.create_workspace(name="acme")
    other = await storage.create_workspace(name="globex")
    sealed = await storage.seal(ws.id, "idp-client-secret-value", purpose="idp.client_secret")
    assert sealed.startswith("lc1:") and "idp-client-secret-value" not in sealed
    assert await storage.unseal(ws.id, sealed, purpose="idp.client_secret") == (
        "idp-client-secret-value"
    )
    with pytest.raises(EncryptionError):
        await storage.unseal(ws.id, sealed, purpose="totp.secret")
    with pytest.raises(EncryptionError):
        await storage.unseal(other.id, sealed, purpose="idp.client_secret")
    await storage.purge_workspace(ws.id)
    rows = await storage._fetch("SELECT 1 AS k FROM data_keys WHERE workspace_id=?", ws.id)
    assert rows == []  # the key is gone: whatever still holds `sealed` cannot open it
    with pytest.raises(EncryptionError):
        await storage.unseal(ws.id, sealed, purpose="idp.client_secret")


async def test_plaintext_from_before_encryption_is_sealed_at_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    body = "the parcel to Kalamazoo never arrived"
    async with open_backend(url) as plain:  # a database from before encryption
        ws = await plain.create_workspace(name="acme")
        visitor_id = await _visitor_with_personal_data(plain, ws.id)
        conv = await plain.create_conversation(ws.id, visitor_id=visitor_id)
        await plain.append(message(conv, body))
    assert _files_holding(tmp_path, [EMAIL, "Kalamazoo"])
    async with open_backend(url, keyring=ring(new_master_key_text())) as store:
        assert (await store.get_visitor(ws.id, visitor_id)).email == EMAIL  # type: ignore[union-attr]
        assert [e.body for e in await store.history(ws.id, conv.id)] == [body]
        assert await store.seal_plaintext() == 2  # the event and the visitor
        assert await store.seal_plaintext() == 0
        assert (await store.get_visitor(ws.id, visitor_id)).email == EMAIL  # type: ignore[union-attr]
        assert [e.body for e in await store.history(ws.id, conv.id)] == [body]
        hits = await store.search(ws.id, "kalamazoo")  # re-indexed with keyed tokens
        assert [h.snippet for h in hits] == ["the parcel to \ue000Kalamazoo\ue001 never arrived"]
    assert _files_holding(tmp_path, [NAME, EMAIL, ATTRIBUTE, IP, "alamazoo", "parcel"]) == []


async def test_master_key_rotation_under_traffic_loses_nothing(
    storage: SqlStorage, open_store: Opener
) -> None:
    """Writers keep creating workspaces and visitors while the data keys are re-wrapped; every
    acknowledged write reads back afterwards, first with both keys, then with the new one only
    (after retiring the old), and never with the old one alone."""
    old, new = new_master_key_text(), new_master_key_text()
    await storage.use_keys(ring(old))
    written: list[tuple[str, str, str]] = []  # (workspace, visitor, name)
    rotated, enough = trio.Event(), trio.Event()

    async def writer(n: int) -> None:
        for i in range(12):
            ws = await storage.create_workspace(name=f"w{n}-{i}")
            v = await storage.create_visitor(ws.id, token_hash=f"t{n}-{i}")
            name = f"visitor {n}-{i}"
            await storage.update_visitor(ws.id, v.id, name=name)
            written.append((ws.id, v.id, name))
            if len(written) >= 9:
                enough.set()
            if i == 6:
                await rotated.wait()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(writer, n)
            await enough.wait()
            assert await storage.rotate_master_key(ring(new, old)) >= 1
            rotated.set()
    assert len(written) == 36

    async def all_readable(store: SqlStorage) -> None:
        for ws_id, v_id, name in written:
            got = await store.get_visitor(ws_id, v_id)
            assert got is not None and got.name == name

    async with open_store(keyring=ring(new, old)) as both:
        await all_readable(both)
        await both.rotate_master_key(ring(new))  # retire the old key
    async with open_store(keyring=ring(new)) as only_new:
        assert await only_new.check_data_keys() == 36
        await all_readable(only_new)
    async with open_store(keyring=ring(old)) as only_old:
        with pytest.raises(EncryptionError, match="not configured"):
            await only_old.check_data_keys()


async def test_keys_rotate_cli_rewraps_while_a_server_keeps_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/live.db"
    key_file = default_key_file(str(tmp_path / "live.db"))
    key_file.write_text(new_master_key_text() + "\n")
    first = MasterKeyRing(parse_master_keys(key_file.read_text()))
    written: list[tuple[str, str]] = []
    async with open_backend(url, keyring=first) as server:  # keeps running with the old key
        ws = await server.create_workspace(name="acme")
        for i in range(5):
            v = await server.create_visitor(ws.id, token_hash=f"t{i}")
            written.append((ws.id, v.id))
        assert await cli("keys", "rotate", "--database-url", url) == 0
        assert len(key_file.read_text().split()) == 2  # new first, old kept
        late = await server.create_workspace(name="created during the rotation")
        v = await server.create_visitor(late.id, token_hash="late", ip=IP)
        written.append((late.id, v.id))
    assert await cli("keys", "rotate", "--retire-old", "--database-url", url) == 0
    assert len(key_file.read_text().split()) == 1
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    out = capsys.readouterr().out
    assert "re-wrapped 1 data keys" in out and "older master keys retired" in out
    current = MasterKeyRing(parse_master_keys(key_file.read_text()))
    assert current.current_id != first.current_id
    async with open_backend(url, keyring=current) as store:
        for ws_id, v_id in written:
            assert await store.get_visitor(ws_id, v_id) is not None
        assert await store.check_data_keys() == 2
    async with open_backend(url, keyring=current) as store:
        rotations = [e for e in (await store.list_audit(None)).items if e.action == "keys.rotated"]
        assert [e.target for e in rotations] == [f"master_key:{current.current_id}"] * 2
        assert (await store.verify_audit(None)).ok
    assert await cli("keys", "status", "--database-url", url) == 0
    assert f"data keys wrapped by {current.current_id}: 2" in capsys.readouterr().out


async def test_a_whole_database_backup_is_ciphertext_and_restores_with_the_master_key(
    storage: SqlStorage, tmp_path: Path
) -> None:
    """The PostgreSQL backup format (and the SQLite-to-PostgreSQL path): values as stored,
    data keys wrapped; a restore reads them with the same master key and no other."""
    key = new_master_key_text()
    await storage.use_keys(ring(key))
    ws = await storage.create_workspace(name="acme")
    visitor_id = await _visitor_with_personal_data(storage, ws.id)
    conv = await storage.create_conversation(ws.id, visitor_id=visitor_id)
    await storage.append(message(conv, "the parcel to Kalamazoo never arrived"))
    lines = [line async for line in storage.export_database_jsonl()]
    text = "".join(lines)
    assert not [s for s in (NAME, EMAIL, ATTRIBUTE, IP, "Kalamazoo") if s in text]

    async def replay() -> AsyncIterator[str]:
        for line in lines:
            yield line

    async with open_backend(f"sqlite:///{tmp_path}/restored.db", keyring=ring(key)) as target:
        await target.import_jsonl(replay())
        # The visitor keys are not in the backup: they come from the key vault.
        assert await target.import_vault_rows(await storage.vault_rows()) == 1
        assert await target.check_data_keys() == 1
        got = await target.get_visitor(ws.id, visitor_id)
        assert got is not None and (got.email, got.attributes) == (EMAIL, {"tier": ATTRIBUTE})
        assert [h.seq for h in await target.search(ws.id, "kalamazoo")] == [1]
    async with open_backend(f"sqlite:///{tmp_path}/other.db") as keyless:
        await keyless.import_jsonl(replay())
        with pytest.raises(EncryptionError, match="give the master key"):
            await keyless.check_data_keys()


async def test_search_finds_each_whole_word_and_nothing_else_on_both_backends(
    storage: SqlStorage,
) -> None:
    """Many words through the blind index, on both backends' full-text engines: every word
    finds exactly its messages (PostgreSQL's parser once split tokens such as 3e4… at a
    float); prefixes and other workspaces' words find nothing."""
    await storage.use_keys(ring(new_master_key_text()))
    ws = await storage.create_workspace(name="acme")
    visitor = await storage.create_visitor(ws.id, token_hash="t")
    conv = await storage.create_conversation(ws.id, visitor_id=visitor.id)
    words = [f"w{n}x{n * 7919 % 1000}" for n in range(150)]
    for i in range(0, len(words), 3):
        await storage.append(message(conv, " ".join(words[i : i + 3])))
    for n, word in enumerate(words):
        hits = await storage.search(ws.id, word)
        assert [h.seq for h in hits] == [n // 3 + 1], word
        assert f"\ue000{word}\ue001" in hits[0].snippet
    assert await storage.search(ws.id, words[0][:3]) == []  # no prefixes
    other = await storage.create_workspace(name="globex")
    assert await storage.search(other.id, words[0]) == []
