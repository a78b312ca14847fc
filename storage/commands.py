"""Operator subcommands: ``livechat migrate``, ``backup``, ``restore`` and ``export``.

Each handler returns the process exit status, with a one-line message on stderr otherwise:

- 0: success;
- 1: the storage operation failed (database unreachable, target not empty, verification);
- 2: bad configuration, or the file given to ``restore`` is not a usable backup (missing,
  empty, random bytes, truncated or damaged).

Backups and exports are written ``0600`` in directories created ``0700``, whatever the umask.
A finished ``backup`` is recorded in the database (``Storage.record_backup``): the server shows
it in ``/metrics`` so operators can alert when backups stop.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import trio

from storage import (
    BackupRecord,
    BlobStore,
    LocalBlobStore,
    backend_of,
    create_private_file,
    open_backend,
    private_dir,
)
from storage._export import FORMAT_NAME, export_jsonl, table_counts
from storage.errors import BackupError, NotABackupError, RestoreError, StorageError

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_WRITE_CHUNK_CHARS: Final = 1 << 20  # buffer this much text per file write


Configure = Callable[[argparse.Namespace], str | None]
"""Reads the operator's configuration for a command: sets ``args.blobs`` (the server's file
store) and returns the database URL, or None when the configuration is unusable (it said why
on stderr; the command exits 2). Supplied by the web layer, which owns the settings."""


def register(
    subparsers: Any, *, add_database_options: Callable[[Any], None], configure: Configure
) -> None:
    """Add the storage subcommands to the ``livechat`` parser (``web.storage_commands``
    calls this with the server's option set and configuration loader)."""
    migrate = subparsers.add_parser(
        "migrate",
        help="apply pending schema migrations and print the schema version",
        description="Bring the database schema to this program's version (forward only; safe "
        "to run repeatedly and while servers run). Prints the resulting schema version.",
    )
    add_database_options(migrate)
    migrate.set_defaults(handler=_handler(_migrate, configure))

    backup = subparsers.add_parser(
        "backup",
        help="write a consistent online backup while the server keeps running",
        description="Write a consistent backup without stopping the server. SQLite: the online "
        "backup API (a complete database file, integrity-checked). PostgreSQL: the JSON Lines "
        "export format of the whole database. Restore either with `livechat restore`.",
    )
    add_database_options(backup)
    backup.add_argument("--out", required=True, help="file to write (replaced atomically)")
    backup.set_defaults(handler=_handler(_backup, configure))

    restore = subparsers.add_parser(
        "restore",
        help="restore a backup or export into an EMPTY database and verify it",
        description="Restore a `livechat backup` file (SQLite database or JSON Lines export) "
        "into the configured database, which must be empty (no workspaces). Row counts (and "
        "SQLite's integrity check) are verified; any failure exits non-zero. A SQLite backup "
        "restores into PostgreSQL too: that is the migration path.",
    )
    add_database_options(restore)
    restore.add_argument("--from", dest="source", required=True, help="backup file to restore")
    restore.set_defaults(handler=_handler(_restore, configure))

    export = subparsers.add_parser(
        "export",
        help="export a workspace (or one visitor's data) as JSON Lines or CSV",
        description="Export one workspace's data, or with --visitor one visitor's data (for a "
        "data-subject request). jsonl: every row, restorable with `livechat restore`; csv: one "
        "row per conversation, with spreadsheet formulas neutralised. The export is audited.",
    )
    add_database_options(export)
    export.add_argument("--workspace", required=True, help="workspace id")
    export.add_argument("--visitor", help="only this visitor's data (JSON Lines only)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    export.add_argument("--out", required=True, help="file to write ('-' for stdout)")
    export.set_defaults(handler=_handler(_export, configure))


Command = Callable[[argparse.Namespace, str], Coroutine[Any, Any, None]]


def _handler(command: Command, configure: Configure) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        try:
            url = configure(args)
            if url is None:
                return 2
            trio.run(command, args, url)
        except NotABackupError as err:
            print(f"livechat {args.command}: error: {err}", file=sys.stderr)
            return 2
        except (StorageError, OSError) as err:
            print(f"livechat {args.command}: error: {err}", file=sys.stderr)
            return 1
        return 0

    return handle


async def _migrate(args: argparse.Namespace, url: str) -> None:
    async with open_backend(url, blobs=args.blobs) as storage:
        version = await storage.schema_version()
    print(f"schema version {version} ({storage.backend_name})")


async def _write_lines(path: str, lines: AsyncIterator[str]) -> None:
    """Write to a private temporary file beside ``path``, fsync, rename: never a torn file."""
    if path == "-":
        async for line in lines:
            sys.stdout.write(line)
        return
    target = trio.Path(path)
    tmp = trio.Path(f"{path}.partial")
    await trio.to_thread.run_sync(private_dir, _parent_dir(path))
    fd = await trio.to_thread.run_sync(create_private_file, str(tmp))
    try:
        raw = os.fdopen(fd, "w", encoding="utf-8", newline="")
        async with trio.wrap_file(raw) as out:
            buffer: list[str] = []
            size = 0
            async for line in lines:
                buffer.append(line)
                size += len(line)
                if size >= _WRITE_CHUNK_CHARS:
                    await out.write("".join(buffer))
                    buffer, size = [], 0
            await out.write("".join(buffer))
            await out.flush()
            await trio.to_thread.run_sync(os.fsync, out.fileno())
        await tmp.replace(target)
    finally:
        if await tmp.exists():
            await tmp.unlink()


async def _read_lines(path: str) -> AsyncIterator[str]:
    async with await trio.open_file(path, encoding="utf-8", newline="") as source:
        async for line in source:
            yield line


async def _backup(args: argparse.Namespace, url: str) -> None:
    from storage.sqlite import SQLiteStorage

    out = _absolute(args.out)
    async with open_backend(url, blobs=args.blobs) as storage:
        if isinstance(storage, SQLiteStorage):
            # The database file, then the bytes of its files beside it (<out>.files/): a file
            # row without its bytes would restore as "file not found".
            tmp = f"{out}.partial"
            try:
                await trio.to_thread.run_sync(_private_empty_file, tmp)
                await storage.backup_to(tmp)  # SQLite keeps the mode of the file it opens
                await copy_blobs(tmp, storage, f"{out}.files")
                await trio.Path(tmp).replace(out)
            finally:
                if await trio.Path(tmp).exists():
                    await trio.Path(tmp).unlink()
        else:
            try:
                await _write_lines(out, storage.export_database_jsonl())
            except OSError as err:
                raise BackupError(f"cannot write {out}: {err}") from err
        counts = await table_counts(storage)
        size = (await trio.Path(out).stat()).st_size
        await storage.record_backup(
            BackupRecord(path=out, size_bytes=size, finished_at=time.time())
        )
    print(
        f"backup written to {out}: {counts['workspaces']} workspaces,"
        f" {counts['conversations']} conversations, {counts['events']} events"
    )


async def copy_blobs(db_path: str, storage: Any, directory: str) -> int:
    """Copy the bytes of every file listed in the backup ``db_path`` into ``directory``."""

    def listed() -> list[str]:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            return [str(row[0]) for row in con.execute("SELECT id FROM attachments")]
        finally:
            con.close()

    ids = await trio.to_thread.run_sync(listed)
    target = LocalBlobStore(directory)
    copied = 0
    for blob_id in ids:
        data = await storage.blobs.get(blob_id)
        if data is not None:  # bytes already gone (erased meanwhile): the row restores alone
            await target.put(blob_id, data)
            copied += 1
    return copied


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _parent_dir(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def _private_empty_file(path: str) -> None:
    private_dir(_parent_dir(path))
    os.close(create_private_file(path))


def _check_backup_file(path: str) -> dict[str, int] | None:
    """Refuse what is not a backup before touching the database; ``NotABackupError`` says why.

    Returns None for a SQLite file (checked while it is copied), else the row counts of the
    export's trailer. Reads the whole file once: every line must be UTF-8, the first one our
    export header and the last one the end marker (a truncated file has none).
    """
    if not os.path.isfile(path):
        raise NotABackupError(f"no such backup file: {path}")
    with open(path, "rb") as source:
        head = source.read(len(_SQLITE_MAGIC))
        if not head:
            raise NotABackupError(f"{path} is empty: not a livechat backup")
        if head == _SQLITE_MAGIC:
            return None
        source.seek(0)
        first: bytes | None = None
        last = b""
        for line_no, line in enumerate(source, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise NotABackupError(
                    f"{path} is not a livechat backup (line {line_no} is not text)"
                ) from None
            if first is None:
                first = line
            if line.strip():
                last = line
    header = _json_object(first or b"")
    if header is None or header.get("format") != FORMAT_NAME:
        raise NotABackupError(
            f"{path} is not a livechat backup (neither a SQLite database nor a livechat export)"
        )
    trailer = _json_object(last)
    if trailer is None or trailer.get("end") is not True or not isinstance(
        trailer.get("counts"), dict
    ):
        raise NotABackupError(f"{path} is a truncated livechat export: the end marker is missing")
    return {str(k): int(v) for k, v in trailer["counts"].items()}


def _json_object(line: bytes) -> dict[str, Any] | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    return item if isinstance(item, dict) else None


async def _restore(args: argparse.Namespace, url: str) -> None:
    expected = await trio.to_thread.run_sync(_check_backup_file, args.source)
    if expected is None:
        await _restore_sqlite_file(args.source, url, args.blobs)
    else:
        await _restore_jsonl(args.source, url, expected, args.blobs)


async def _restore_jsonl(
    source: str, url: str, expected: dict[str, int], blobs: BlobStore
) -> None:
    async with open_backend(url, blobs=blobs) as storage:
        restored = await storage.import_jsonl(_read_lines(source))
        await _verify(storage, expected)
    print(f"restored {restored} rows from {source}; counts verified")


async def _verify(storage: Any, expected: dict[str, int]) -> None:
    actual = await table_counts(storage)
    wrong = {t: (n, actual.get(t, 0)) for t, n in expected.items() if actual.get(t, 0) != n}
    if wrong:
        raise RestoreError(f"verification failed, (expected, found) rows per table: {wrong}")
    check = getattr(storage, "integrity_check", None)
    if check is not None and (result := await check()) != "ok":
        raise RestoreError(f"integrity check failed: {result}")


async def _restore_sqlite_file(source: str, url: str, blobs: BlobStore) -> None:
    """Copy the backup (backup API, integrity-checked), then move its rows into the target.

    The source file is never modified: it is copied to a temporary file first. A truncated or
    damaged file fails the copy or its integrity check: ``NotABackupError``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        copy = str(Path(tmp) / "source.db")

        def snapshot() -> None:
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)
                (check,) = dst.execute("PRAGMA integrity_check").fetchone()
                if check != "ok":
                    raise NotABackupError(
                        f"{source} is a damaged or truncated SQLite backup"
                        f" (integrity check: {_one_line(check)})"
                    )
            except sqlite3.Error as err:
                raise NotABackupError(
                    f"{source} is a damaged or truncated SQLite backup ({_one_line(str(err))})"
                ) from err
            finally:
                dst.close()
                src.close()

        await trio.to_thread.run_sync(snapshot)
        backend, _ = backend_of(url)
        # The backup's files are in its sidecar directory (``<backup>.files``).
        sidecar = f"{source}.files"
        async with open_backend(f"sqlite:///{copy}", files_dir=sidecar) as original:
            expected = await table_counts(original)
            async with open_backend(url, blobs=blobs) as target:
                await target.import_jsonl(export_jsonl(original, None, visitor_id=None))
                await _verify(target, expected)
    print(f"restored {sum(expected.values())} rows from {source} into {backend}; verified")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


async def _export(args: argparse.Namespace, url: str) -> None:
    if args.visitor and args.format == "csv":
        raise StorageError("--visitor exports are JSON Lines only (use --format jsonl)")
    async with open_backend(url, blobs=args.blobs) as storage:
        if await storage.get_workspace(args.workspace) is None:
            raise StorageError(f"workspace {args.workspace!r} not found")
        if args.format == "csv":
            lines = storage.export_csv(args.workspace)
        else:
            lines = storage.export_jsonl(args.workspace, visitor_id=args.visitor)
        await _write_lines(args.out, lines)
        await storage.audit(
            args.workspace,
            actor="cli",
            action="export.visitor" if args.visitor else "export.workspace",
            target=args.visitor,
            details={"format": args.format},
        )
    if args.out != "-":
        print(f"export written to {args.out}", file=sys.stderr)
