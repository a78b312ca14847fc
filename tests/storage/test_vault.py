"""The key vault (storage._vault): an erasure reaches backups taken before it, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage import (
    Attachment,
    AuthorType,
    ConversationFilter,
    ConversationPatch,
    EncryptionError,
    MailItem,
    MasterKeyRing,
    open_backend,
)
from storage._base import SqlStorage
from storage._sql import Program, Q
from storage._vault import sqlite_vault_path
from storage.crypto import ERASED_TEXT, new_master_key_text, parse_master_keys, write_key_file
from storage.errors import NotFound
from tests.pg import pg_schema_url
from tests.storage.helpers import message
from tests.storage.test_commands import cli
from tests.storage.test_webhooks import expand

ERASED_NAME = "Aurelio Quibblesworth"
ERASED_BODY = "the zucchini smuggler waits in aisle nine"
KEPT_NAME = "Bettina Oddfellow"
KEPT_BODY = "my parcel arrived, thank you"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def ring(text: str) -> MasterKeyRing:
    return MasterKeyRing(parse_master_keys(text))


async def _two_visitors(storage: SqlStorage) -> tuple[str, dict[str, tuple[str, str]]]:
    """A workspace with two visitors who each wrote one message: (workspace, {name: (visitor,
    conversation)})."""
    ws = await storage.create_workspace(name="acme")
    out = {}
    for name, body in ((ERASED_NAME, ERASED_BODY), (KEPT_NAME, KEPT_BODY)):
        visitor = await storage.create_visitor(ws.id, token_hash=f"t-{name}", ip="203.0.113.9")
        await storage.update_visitor(ws.id, visitor.id, name=name, attributes={"plan": name})
        conv = await storage.create_conversation(ws.id, visitor_id=visitor.id)
        await storage.append(message(conv, body))
        out[name] = (visitor.id, conv.id)
    return ws.id, out


async def test_values_whose_visitor_key_is_gone_read_as_erased(storage: SqlStorage) -> None:
    """A crash after the key's commit and before the rows' (or an old backup restored without
    the key): the rows read as erased, no crash; everyone else reads as before."""
    await storage.use_keys(ring(new_master_key_text()))
    ws, people = await _two_visitors(storage)
    gone, gone_conv = people[ERASED_NAME]
    kept, kept_conv = people[KEPT_NAME]
    await storage._destroy_visitor_key(ws, gone)  # the erasure's first commit, alone

    visitor = await storage.get_visitor(ws, gone)
    assert visitor is not None
    assert (visitor.name, visitor.attributes, visitor.ip) == (ERASED_TEXT, {}, ERASED_TEXT)
    assert [e.body for e in await storage.history(ws, gone_conv)] == [ERASED_TEXT]
    assert [h.body for h in await storage.search(ws, "zucchini")] == [ERASED_TEXT]
    lines = "".join([line async for line in storage.export_jsonl(ws)])
    assert ERASED_BODY not in lines and KEPT_BODY in lines
    kept_visitor = await storage.get_visitor(ws, kept)
    assert kept_visitor is not None and kept_visitor.name == KEPT_NAME
    assert [e.body for e in await storage.history(ws, kept_conv)] == [KEPT_BODY]

    await storage.use_keys(storage.keyring)  # a fresh server: no visitor key cached
    csv = "".join([line async for line in storage.export_csv(ws)])
    assert KEPT_NAME in csv and ERASED_TEXT in csv and ERASED_NAME not in csv

    # A key that is there but does not open is tampering or a wrong key: never "erased".
    table = storage.vault_table()
    rows = await storage._fetch(f"SELECT wrapped FROM {table} WHERE visitor_id=?", kept)
    other = await storage._fetch(f"SELECT wrapped FROM {table} WHERE visitor_id<>?", kept)
    assert not other  # the erased visitor's key is gone from the vault
    tampered = ("B" if rows[0]["wrapped"][0] == "A" else "A") + rows[0]["wrapped"][1:]
    await storage._write(
        _statement(f"UPDATE {table} SET wrapped=? WHERE visitor_id=?", tampered, kept)
    )
    await storage.use_keys(storage.keyring)  # a fresh server: nothing cached
    with pytest.raises(EncryptionError, match="does not open"):
        await storage.get_visitor(ws, kept)


def _statement(sql: str, *args: object) -> Program[None]:
    yield Q(sql, args)


@contextmanager
def _fresh_target(database_url: str, tmp_path: Path) -> Iterator[str]:
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/restored.db"
    else:
        with pg_schema_url() as url:
            yield url


async def test_an_erasure_reaches_a_backup_taken_before_it(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "master.key"
    master = new_master_key_text()
    write_key_file(key_file, [master])
    keys = ("--master-key-file", str(key_file))
    async with open_backend(database_url, keyring=ring(master)) as live:
        ws, people = await _two_visitors(live)
    gone, gone_conv = people[ERASED_NAME]
    kept, kept_conv = people[KEPT_NAME]
    backup = tmp_path / "old.backup"
    assert await cli("backup", "--database-url", database_url, *keys, "--out", str(backup)) == 0
    assert f"lc2:{gone}:".encode() in backup.read_bytes()  # the backup holds their sealed data

    async with open_backend(database_url, keyring=ring(master)) as live:
        [wrapped] = [r["wrapped"] for r in await live.vault_rows() if r["visitor_id"] == gone]
        await live.erase_visitor(ws, gone, actor="agent:1")
        left = await live.vault_rows()
        assert [r["visitor_id"] for r in left] == [kept]
    if database_url.startswith("sqlite"):
        vault = sqlite_vault_path(database_url.removeprefix("sqlite:///"))  # the live vault
        # Nor in the vault's file or its WAL: the erasure's checkpoint covers attached files.
        vault_files = list(Path(vault).parent.glob(Path(vault).name + "*"))
        assert vault_files and not [p for p in vault_files if wrapped.encode() in p.read_bytes()]
    else:
        vault = str(tmp_path / "vault.jsonl")
        assert (
            await cli("vault", "backup", "--database-url", database_url, *keys, "--out", vault) == 0
        )
        assert "vault backup written" in capsys.readouterr().out

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with _fresh_target(database_url, first) as target:
        # Without a vault the restore refuses: it would not know who was erased.
        args = ("restore", "--database-url", target, *keys, "--from", str(backup))
        assert await cli(*args) == 1
        assert "give the key vault" in capsys.readouterr().err
    with _fresh_target(database_url, second) as target:
        args = ("restore", "--database-url", target, *keys, "--from", str(backup))
        assert await cli(*args, "--vault", vault) == 0
        assert "1 visitors erased after the backup was taken" in capsys.readouterr().out
        async with open_backend(target, keyring=ring(master)) as restored:
            assert await restored.get_visitor(ws, gone) is None
            assert await restored.get_conversation(ws, gone_conv) is None
            kept_visitor = await restored.get_visitor(ws, kept)
            assert kept_visitor is not None and kept_visitor.name == KEPT_NAME
            assert [e.body for e in await restored.history(ws, kept_conv)] == [KEPT_BODY]
            erased = [e for e in (await restored.list_audit(ws)).items if e.actor == "restore"]
            assert [(e.action, e.target) for e in erased] == [("visitor.erased", f"visitor:{gone}")]
            dump = "".join([line async for line in restored.export_database_jsonl()])
            assert gone not in dump.replace(
                f"visitor:{gone}", ""
            )  # only the audit entry names them
        if target.startswith("sqlite"):
            texts = [ERASED_NAME, ERASED_BODY, f"lc2:{gone}"]
            files = [p for p in second.iterdir() if p.name.startswith("restored.db")]
            assert files and not [p for p in files for t in texts if t.encode() in p.read_bytes()]


async def test_a_lost_vault_is_refused_and_restored_from_a_vault_backup(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without its vault every visitor would read as erased: the start refuses instead, and
    ``vault restore`` puts the keys back."""
    key_file = tmp_path / "master.key"
    master = new_master_key_text()
    write_key_file(key_file, [master])
    keys = ("--database-url", database_url, "--master-key-file", str(key_file))
    async with open_backend(database_url, keyring=ring(master)) as live:
        ws, people = await _two_visitors(live)
    backup = str(tmp_path / "vault.jsonl")
    assert await cli("vault", "backup", *keys, "--out", backup) == 0
    async with open_backend(database_url, keyring=ring(master)) as live:
        await live._write(_statement(f"DELETE FROM {live.vault_table()}"))  # the vault is lost
        with pytest.raises(EncryptionError, match=r"key vault .* is empty"):
            await live.check_data_keys()
    assert await cli("vault", "restore", *keys, "--from", backup) == 0
    assert "2 visitor keys restored" in capsys.readouterr().out
    async with open_backend(database_url, keyring=ring(master)) as live:
        assert await live.check_data_keys() == 1
        visitor = await live.get_visitor(ws, people[KEPT_NAME][0])
        assert visitor is not None and visitor.name == KEPT_NAME


async def test_a_workspace_purge_deletes_its_visitor_keys(storage: SqlStorage) -> None:
    await storage.use_keys(ring(new_master_key_text()))
    ws, _ = await _two_visitors(storage)
    other, _ = await _two_visitors(storage)
    await storage.purge_workspace(ws)
    left = await storage.vault_rows()
    assert len(left) == 2 and {r["workspace_id"] for r in left} == {other}


async def test_data_sealed_before_the_vault_moves_under_visitor_keys(storage: SqlStorage) -> None:
    """``keys migrate --per-visitor``: values a server sealed with the workspace key before
    the vault existed are re-sealed under the visitor's key; erasing then reaches them too."""
    await storage.use_keys(ring(new_master_key_text()))
    ws, people = await _two_visitors(storage)
    gone, gone_conv = people[ERASED_NAME]
    key = await storage.data_key(ws)
    assert key is not None
    # As an older version stored them: lc1 values, no vault rows.
    for visitor_id, _ in people.values():
        visitor = await storage.get_visitor(ws, visitor_id)
        assert visitor is not None
        await storage._write(
            _statement(
                "UPDATE visitors SET name=?, attributes=?, ip=? WHERE id=?",
                key.seal(str(visitor.name), "visitors.name"),
                key.seal('{"plan":"old"}', "visitors.attributes"),
                key.seal(str(visitor.ip), "visitors.ip"),
                visitor_id,
            )
        )
    for _, conv in people.values():
        for event in await storage.history(ws, conv):
            await storage._write(
                _statement(
                    "UPDATE events SET body=? WHERE conversation_id=? AND seq=?",
                    key.seal(str(event.body), "events.body"),
                    conv,
                    event.seq,
                )
            )
    await storage._write(
        _statement(
            "UPDATE conversations SET rating_comment=? WHERE id=?",
            key.seal("an old comment", "conversations.rating_comment"),
            gone_conv,
        )
    )
    await storage._write(_statement(f"DELETE FROM {storage.vault_table()}"))
    await storage.use_keys(storage.keyring)  # a server restarted on the old data
    assert [e.body for e in await storage.history(ws, gone_conv)] == [ERASED_BODY]
    # A new message about a visitor from before the vault gives them a key.
    conv = await storage.get_conversation(ws, gone_conv)
    assert conv is not None
    await storage.append(message(conv, "one more question"))
    stored = await storage._fetch("SELECT body FROM events WHERE conversation_id=?", gone_conv)
    assert [str(r["body"])[:4] for r in stored] == ["lc1:", "lc2:"]

    # Two visitors, their two messages, one rating comment.
    assert await storage.reseal_per_visitor() == 5
    assert await storage.reseal_per_visitor() == 0
    rows = await storage._fetch("SELECT name, attributes, ip FROM visitors WHERE id=?", gone)
    assert all(str(v).startswith(f"lc2:{gone}:") for v in rows[0].values())
    stored = await storage._fetch("SELECT body FROM events WHERE conversation_id=?", gone_conv)
    assert all(str(r["body"]).startswith(f"lc2:{gone}:") for r in stored)
    visitor = await storage.get_visitor(ws, gone)
    assert visitor is not None and (visitor.name, visitor.attributes) == (
        ERASED_NAME,
        {"plan": "old"},
    )

    conv = await storage.get_conversation(ws, gone_conv)
    assert conv is not None and conv.rating_comment == "an old comment"

    assert [e.body for e in await storage.history(ws, gone_conv)] == [
        ERASED_BODY,
        "one more question",
    ]

    await storage._destroy_visitor_key(ws, gone)
    assert [e.body for e in await storage.history(ws, gone_conv)] == [ERASED_TEXT] * 2
    kept = await storage.get_visitor(ws, people[KEPT_NAME][0])
    assert kept is not None and kept.name == KEPT_NAME
    assert [e.body for e in await storage.history(ws, people[KEPT_NAME][1])] == [KEPT_BODY]


async def test_a_visitors_files_are_sealed_with_their_key(
    database_url: str, tmp_path: Path
) -> None:
    """Name and bytes under the visitor's key: a backup's ``.files/`` copy of them is as
    unreadable after the erasure as their messages."""
    files = tmp_path / "files"
    async with open_backend(
        database_url, keyring=ring(new_master_key_text()), files_dir=str(files)
    ) as storage:
        ws, people = await _two_visitors(storage)
        gone = people[ERASED_NAME][0]
        upload = Attachment(
            id="file-0001-abcdefgh",
            workspace_id=ws,
            uploader_type=AuthorType.VISITOR,
            uploader_id=gone,
            visitor_id=gone,
            conversation_id=None,
            name="zucchini-receipt.png",
            content_type="image/png",
            size=len(PNG),
            created_at=1000.0,
        )
        stored = await storage.add_attachment(upload, PNG, max_storage_bytes=None)
        on_disk = b"".join(p.read_bytes() for p in files.rglob("*") if p.is_file())
        assert f"\x00lcb2\x00{gone}\x00".encode() in on_disk and PNG not in on_disk
        assert await storage.read_attachment(stored) == PNG
        got = await storage.get_attachment(ws, upload.id)
        assert got is not None and got.name == "zucchini-receipt.png"

        before = "".join([line async for line in storage.export_jsonl(ws)])
        assert '"file":' in before and "zucchini-receipt" in before

        await storage._destroy_visitor_key(ws, gone)
        assert await storage.read_attachment(stored) is None  # as good as gone: a 404
        got = await storage.get_attachment(ws, upload.id)
        assert got is not None and got.name == ERASED_TEXT
        lines = "".join([line async for line in storage.export_jsonl(ws)])
        assert '"file":' not in lines and "zucchini-receipt" not in lines


async def test_mail_and_webhook_deliveries_about_a_chat_use_its_visitors_key(
    storage: SqlStorage,
) -> None:
    """Their payloads carry the chat's text, names and emails: under the visitor's key."""
    await storage.use_keys(ring(new_master_key_text()))
    ws, people = await _two_visitors(storage)
    gone, gone_conv = people[ERASED_NAME]
    sub = await storage.create_webhook(
        ws, url="https://x.test/h", event_types=["message.created"], secret="k"
    )
    conv = await storage.get_conversation(ws, gone_conv)
    assert conv is not None
    await storage.append(message(conv, "a second zucchini question"))
    assert await storage.feed_webhooks(limit=100, settle_s=5.0, expand=expand) == (1, False)
    mail = MailItem(
        id="m-1",
        workspace_id=ws,
        conversation_id=gone_conv,
        kind="transcript",
        dedupe_key=None,
        recipient="aurelio@example.com",
        subject="Your chat",
        text_body=ERASED_BODY,
        html_body=f"<p>{ERASED_BODY}</p>",
        created_at=1.0,
    )
    assert await storage.enqueue_mail(mail)
    stored = await storage._fetch("SELECT payload FROM webhook_deliveries")
    assert len(stored) == 1 and str(stored[0]["payload"]).startswith(f"lc2:{gone}:")
    stored = await storage._fetch("SELECT recipient, text_body FROM mail_outbox")
    assert all(str(v).startswith(f"lc2:{gone}:") for v in stored[0].values())
    [delivery] = await storage.list_webhook_deliveries(ws, sub.id)
    assert "a second zucchini question" in delivery.payload
    [queued] = await storage.list_mail(ws)
    assert queued.text_body == ERASED_BODY

    await storage._destroy_visitor_key(ws, gone)  # the erasure's first commit
    await storage.use_keys(storage.keyring)  # and another server, nothing cached
    [delivery] = await storage.list_webhook_deliveries(ws, sub.id)
    [queued] = await storage.list_mail(ws)
    assert (delivery.payload, queued.recipient, queued.text_body) == (ERASED_TEXT,) * 3


async def test_a_rating_comment_is_sealed_with_the_visitors_key(storage: SqlStorage) -> None:
    await storage.use_keys(ring(new_master_key_text()))
    ws, people = await _two_visitors(storage)
    gone, gone_conv = people[ERASED_NAME]
    comment = "the zucchini advice was perfect"
    conv = await storage.get_conversation(ws, gone_conv)
    assert conv is not None
    patch = ConversationPatch(rating=5, rating_comment=comment)
    await storage.append(message(conv, "thanks!", patch=patch))
    stored = await storage._fetch("SELECT rating_comment FROM conversations WHERE id=?", gone_conv)
    assert str(stored[0]["rating_comment"]).startswith(f"lc2:{gone}:")

    await storage.use_keys(storage.keyring)  # a fresh server: nothing cached
    got = await storage.get_conversation(ws, gone_conv)
    assert got is not None and got.rating_comment == comment
    page = await storage.list_conversations(ws, ConversationFilter())
    assert comment in [c.rating_comment for c in page.items]
    assert comment in "".join([line async for line in storage.export_csv(ws)])

    await storage._destroy_visitor_key(ws, gone)
    got = await storage.get_conversation(ws, gone_conv)
    assert got is not None and got.rating_comment == ERASED_TEXT


async def test_a_new_visitors_key_and_row_are_one_write(storage: SqlStorage) -> None:
    """One trip to the writer before a new visitor's first frame; a visitor refused (its
    workspace is gone) leaves no key behind."""
    await storage.use_keys(ring(new_master_key_text()))
    ws = await storage.create_workspace(name="acme")
    visitor = await storage.create_visitor(ws.id, token_hash="t-new", ip="203.0.113.9")
    [row] = await storage.vault_rows()
    assert (row["workspace_id"], row["visitor_id"]) == (ws.id, visitor.id)
    await storage.update_visitor(ws.id, visitor.id, name=KEPT_NAME)
    found = await storage.get_visitor(ws.id, visitor.id)
    assert found is not None and (found.name, found.ip) == (KEPT_NAME, "203.0.113.9")
    gone = await storage.create_workspace(name="gone")
    await storage.purge_workspace(gone.id)
    with pytest.raises(NotFound):
        await storage.create_visitor(gone.id, token_hash="t-late")
    assert len(await storage.vault_rows()) == 1
