"""``livechat migrate / backup / restore / export`` on both backends, with a server writing."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import pytest
import trio

from storage import Attachment, AuthorType, backend_of, open_backend
from storage.schema import migrations
from tests.pg import pg_schema_url
from tests.storage.helpers import message, new_conversation
from web.storage_commands import register


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
    latest = len(migrations(backend_of(database_url)[0]))  # never a hard-coded number
    assert out.count(f"schema version {latest}") == 2


ACKED_BEFORE_BACKUP = 20  # appends acknowledged before the backup starts
ACKED_AFTER_BACKUP = 5  # ...and after it returns: the writer was never stopped
WAIT_S = 60.0  # generous: progress, not speed, is what this test waits for


async def test_backup_during_writes_restores_every_acknowledged_message(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.out"
    acknowledged: list[tuple[str, int]] = []
    progress = trio.Event()  # set, and replaced, after each acknowledged append

    async def until_acknowledged(count: int) -> None:
        with trio.fail_after(WAIT_S):
            while len(acknowledged) < count:
                await progress.wait()

    async with open_backend(database_url) as store:
        ws, conv = await new_conversation(store)

        async def writer() -> None:
            nonlocal progress
            n = 0
            while True:
                n += 1
                result = await store.append(message(conv, f"msg {n} 🙂", client_msg_id=str(n)))
                acknowledged.append((str(n), result.event.seq))
                done, progress = progress, trio.Event()
                done.set()

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


async def test_backup_and_restore_carry_the_files_bytes(
    database_url: str, tmp_path: Path
) -> None:
    """SQLite: the bytes go to ``<backup>.files/``; PostgreSQL: into the JSONL. Either way a
    restore into an empty database with its own file store serves the file again."""
    png = b"\x89PNG\r\n\x1a\n" + b"\x01" * 30
    async with open_backend(database_url, files_dir=str(tmp_path / "live-files")) as store:
        ws, conv = await new_conversation(store)
        attachment = Attachment(
            id="backed-up-file-0001",
            workspace_id=ws.id,
            uploader_type=AuthorType.VISITOR,
            uploader_id=conv.visitor_id,
            visitor_id=conv.visitor_id,
            conversation_id=conv.id,
            name="a.png",
            content_type="image/png",
            size=len(png),
            created_at=1.0,
            sent_at=2.0,
        )
        await store.add_attachment(attachment, png, max_storage_bytes=None)
    backup = tmp_path / "backup.out"
    live = ("--database-url", database_url, "--files-dir", str(tmp_path / "live-files"))
    assert await cli("backup", *live, "--out", str(backup)) == 0
    target = f"sqlite:///{tmp_path}/restored.db"
    restored_files = str(tmp_path / "restored-files")
    args = ("--database-url", target, "--files-dir", restored_files, "--from", str(backup))
    assert await cli("restore", *args) == 0
    async with open_backend(target, files_dir=restored_files) as restored:
        found = await restored.get_attachment(ws.id, attachment.id)
        assert found is not None and await restored.read_attachment(found) == png


async def test_restore_of_a_bad_file_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    url = f"sqlite:///{tmp_path}/t.db"
    assert await cli("restore", "--database-url", url, "--from", str(bad)) == 2
    assert "neither a SQLite database nor a livechat export" in capsys.readouterr().err
    assert await cli("restore", "--database-url", url, "--from", str(tmp_path / "none")) == 2


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


# ---------------------------------------------------------------- hardening: modes, record, refusal


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_backup_file_is_0600_in_a_new_0700_directory_whatever_the_umask(
    database_url: str, tmp_path: Path, umask: int
) -> None:
    async with open_backend(database_url) as store:
        await new_conversation(store)
    out = tmp_path / "new" / "nested" / "backup.out"
    old = os.umask(umask)
    try:
        assert await cli("backup", "--database-url", database_url, "--out", str(out)) == 0
    finally:
        os.umask(old)
    assert mode(out) == 0o600
    assert mode(out.parent) == 0o700 and mode(out.parent.parent) == 0o700
    assert not (out.parent / "backup.out.partial").exists()
    # A second backup replaces a file someone made world-readable, and a leftover ``.partial``
    # of a crashed run: the result is private again.
    out.chmod(0o644)
    (out.parent / "backup.out.partial").write_bytes(b"stale")
    (out.parent / "backup.out.partial").chmod(0o644)
    assert await cli("backup", "--database-url", database_url, "--out", str(out)) == 0
    assert mode(out) == 0o600


async def test_a_finished_backup_is_recorded_with_time_path_and_size(
    database_url: str, tmp_path: Path
) -> None:
    async with open_backend(database_url) as store:
        await new_conversation(store)
        assert await store.last_backup() is None
    before = time.time()
    for name in ("first.out", "second.out"):
        out = tmp_path / name
        assert await cli("backup", "--database-url", database_url, "--out", str(out)) == 0
    async with open_backend(database_url) as store:
        record = await store.last_backup()
    assert record is not None
    assert record.path == str(out) and record.size_bytes == out.stat().st_size > 0
    assert before <= record.finished_at <= time.time()


async def test_a_failed_backup_is_not_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    async with open_backend(url) as store:
        await new_conversation(store)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert await cli("backup", "--database-url", url, "--out", str(blocker / "b.out")) == 1
    async with open_backend(url) as store:
        assert await store.last_backup() is None


def _not_backups(good_jsonl: bytes, good_sqlite: bytes) -> dict[str, bytes]:
    return {
        "random bytes": random.Random(7).randbytes(64 * 1024),
        "empty": b"",
        "truncated export": good_jsonl[: len(good_jsonl) * 2 // 3],
        "export without its end marker": good_jsonl.rsplit(b"\n", 2)[0] + b"\n",
        "truncated SQLite file": good_sqlite[: len(good_sqlite) // 2],
        "SQLite header then garbage": good_sqlite[:100] + b"\xff" * 8000,
        "text": b"hello\n",
    }


async def test_restore_of_what_is_not_a_backup_exits_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path}/live.db"
    async with open_backend(source) as store:
        ws, conv = await new_conversation(store)
        for n in range(30):
            await store.append(message(conv, f"message {n}", client_msg_id=str(n)))
    good_sqlite = tmp_path / "good.db"
    assert await cli("backup", "--database-url", source, "--out", str(good_sqlite)) == 0
    good_jsonl = tmp_path / "good.jsonl"
    assert await cli("export", "--database-url", source, "--workspace", ws.id,
                     "--out", str(good_jsonl)) == 0  # fmt: skip
    capsys.readouterr()
    cases = _not_backups(good_jsonl.read_bytes(), good_sqlite.read_bytes())
    for n, (case, data) in enumerate(cases.items()):
        bad = tmp_path / f"bad-{n}"
        bad.write_bytes(data)
        target = f"sqlite:///{tmp_path}/target-{n}.db"
        assert await cli("restore", "--database-url", target, "--from", str(bad)) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert err.startswith(f"livechat restore: error: {bad} "), (case, err)
        assert "not a livechat backup" in err or "truncated" in err, (case, err)
        # Nothing was restored: the good backup still restores into the same target.
        assert await cli("restore", "--database-url", target, "--from", str(good_sqlite)) == 0
    missing = tmp_path / "none"
    assert await cli("restore", "--database-url", source, "--from", str(missing)) == 2
    assert capsys.readouterr().err == f"livechat restore: error: no such backup file: {missing}\n"


async def test_restore_of_random_bytes_in_a_real_process_prints_no_traceback(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "random.bin"
    bad.write_bytes(random.Random(1).randbytes(4096))
    argv = [sys.executable, "-m", "web.cli", "restore",
            "--database-url", f"sqlite:///{tmp_path}/t.db", "--from", str(bad)]  # fmt: skip
    with trio.fail_after(60):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err == f"livechat restore: error: {bad} is not a livechat backup (line 1 is not text)\n"
