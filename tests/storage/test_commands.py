"""``livechat migrate / backup / restore / export`` on both backends, with a server writing."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import trio

from storage import open_backend
from storage.commands import register
from tests.pg import pg_schema_url
from tests.storage.helpers import message, new_conversation


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="livechat")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


async def cli(*argv: str) -> int:
    # Each command runs its own trio.run: give it a thread, as a separate process would have.
    return await trio.to_thread.run_sync(lambda: run_cli(*argv))


async def test_migrate_is_idempotent_and_prints_the_version(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("migrate", "--database-url", database_url) == 0
    assert await cli("migrate", "--database-url", database_url) == 0
    out = capsys.readouterr().out
    assert out.count("schema version 2") == 2


ACKED_BEFORE_BACKUP = 20  # appends acknowledged before the backup starts
ACKED_AFTER_BACKUP = 5  # ...and after it returns: the writer was never stopped
WAIT_S = 60.0  # generous: progress, not speed, is what this test waits for


async def test_backup_during_writes_restores_every_acknowledged_message(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.out"
    acknowledged: list[tuple[str, int]] = []

    async def until_acknowledged(count: int) -> None:
        with trio.fail_after(WAIT_S):
            while len(acknowledged) < count:
                await trio.sleep(0.005)

    async with open_backend(database_url) as store:
        ws, conv = await new_conversation(store)

        async def writer() -> None:
            n = 0
            while True:
                n += 1
                result = await store.append(message(conv, f"msg {n} 🙂", client_msg_id=str(n)))
                acknowledged.append((str(n), result.event.seq))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            # Wait for progress, not for a wall-clock window: a loaded machine is only slower.
            await until_acknowledged(ACKED_BEFORE_BACKUP)
            before_backup = list(acknowledged)
            assert await cli("backup", "--database-url", database_url, "--out", str(backup)) == 0
            await until_acknowledged(len(acknowledged) + ACKED_AFTER_BACKUP)
            nursery.cancel_scope.cancel()
    assert len(before_backup) >= ACKED_BEFORE_BACKUP

    restored_url = f"sqlite:///{tmp_path}/restored.db"
    assert await cli("restore", "--database-url", restored_url, "--from", str(backup)) == 0
    async with open_backend(restored_url) as restored:
        events = await restored.history(ws.id, conv.id, after_seq=0, limit=500)
        while len(events) % 500 == 0 and events:
            more = await restored.history(ws.id, conv.id, after_seq=events[-1].seq, limit=500)
            if not more:
                break
            events += more
        stored = {(e.client_msg_id, e.seq) for e in events}
        assert set(before_backup) <= stored
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Restoring again into the now non-empty database is refused with a clear message.
    assert await cli("restore", "--database-url", restored_url, "--from", str(backup)) == 1
    assert "not empty" in capsys.readouterr().err


async def test_sqlite_backup_restores_into_postgresql(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(source_url) as store:
        ws, conv = await new_conversation(store)
        await store.append(message(conv, "שלום עולם"))
    backup = tmp_path / "live.backup.db"
    assert await cli("backup", "--database-url", source_url, "--out", str(backup)) == 0
    with pg_schema_url() as url:
        assert await cli("restore", "--database-url", url, "--from", str(backup)) == 0
        async with open_backend(url) as restored:
            assert [e.body for e in await restored.history(ws.id, conv.id)] == ["שלום עולם"]


async def test_restore_of_a_bad_file_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    url = f"sqlite:///{tmp_path}/t.db"
    assert await cli("restore", "--database-url", url, "--from", str(bad)) == 1
    assert "neither a SQLite database nor a livechat export" in capsys.readouterr().err
    assert await cli("restore", "--database-url", url, "--from", str(tmp_path / "none")) == 1


async def test_export_command_writes_jsonl_and_csv_and_audits(
    database_url: str, tmp_path: Path
) -> None:
    async with open_backend(database_url) as store:
        ws, conv = await new_conversation(store)
        await store.append(message(conv, "=1+1"))
    out_jsonl, out_csv = tmp_path / "w.jsonl", tmp_path / "w.csv"
    base = ("--database-url", database_url, "--workspace", ws.id)
    assert await cli("export", *base, "--out", str(out_jsonl)) == 0
    assert await cli("export", *base, "--format", "csv", "--out", str(out_csv)) == 0
    assert await cli("export", *base, "--visitor", conv.visitor_id, "--out", str(out_jsonl)) == 0
    assert '"body":"=1+1"' in out_jsonl.read_text(encoding="utf-8")
    assert out_csv.read_text().startswith("conversation_id,")
    async with open_backend(database_url) as store:
        actions = {e.action for e in (await store.list_audit(ws.id)).items}
    assert actions == {"export.workspace", "export.visitor"}
    assert await cli("export", *base[:2], "--workspace", "nope", "--out", str(out_csv)) == 1
