"""Operator subcommands: ``livechat migrate``, ``backup``, ``restore``, ``export`` and
``audit verify``.

Each handler returns the process exit status, with a one-line message on stderr otherwise:

- 0: success;
- 1: the storage operation failed (database unreachable, target not empty, verification, an
  audit chain that does not verify);
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
from storage._vault import read_vault_file, vault_backup_lines
from storage.crypto import MasterKeyRing, new_master_key_text, parse_master_keys, write_key_file
from storage.errors import (
    AuditChainBroken,
    BackupError,
    EncryptionError,
    NotABackupError,
    RestoreError,
    StorageError,
)

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
    restore.add_argument(
        "--vault",
        help="the key vault to take visitor keys from: the live <database>.vault, or a "
        "`livechat vault backup` file; visitors without a key in it restore as erased "
        "(their rows are deleted, audited)",
    )
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

    audit = subparsers.add_parser(
        "audit",
        help="check the audit log's hash chains",
        description="Audit log tools. `verify` walks each workspace's hash chain (and the "
        "server-wide one) and names the first entry that was edited, deleted or reordered.",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="verify the audit hash chains; exit 1 naming the first broken link",
        description="Verify every audit chain (or one with --workspace; 'server' names the "
        "server-wide chain). Prints one line per chain with its entry count and head hash: "
        "record the head elsewhere to detect a rewrite of the whole chain later. Exits 1 when "
        "a chain is broken, naming its first broken entry.",
    )
    add_database_options(verify)
    verify.add_argument("--workspace", help="only this workspace ('server': server-wide entries)")
    verify.set_defaults(handler=_handler(_audit_verify, configure))

    keys = subparsers.add_parser(
        "keys",
        help="encryption at rest: rotate the master key, encrypt old plaintext, show status",
        description="Manage the master key that wraps the per-workspace data keys "
        "(docs/security.md). The key comes from master_key / LIVECHAT_MASTER_KEY, "
        "master_key_file / --master-key-file, or (SQLite) the file next to the database.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    rotate = keys_sub.add_parser(
        "rotate",
        help="re-wrap every data key under a new master key, while servers keep running",
        description="Generate a new master key and re-wrap every data key under it in one "
        "transaction. A key file gets the new key first and keeps the old one after it, so "
        "servers not yet restarted (and keys they create meanwhile) keep working; once every "
        "server has restarted, run `keys rotate --retire-old`. A key given by setting: the new "
        "value to set is printed once.",
    )
    add_database_options(rotate)
    rotate.add_argument(
        "--retire-old",
        action="store_true",
        help="no new key: re-wrap what older keys still wrap, then drop them from the key file",
    )
    rotate.set_defaults(handler=_handler(_keys_rotate, configure))
    migrate_keys = keys_sub.add_parser(
        "migrate",
        help="encrypt values stored in plaintext (databases from before encryption)",
        description="Seal every sensitive value still stored in plaintext (also done at server "
        "start). Safe to run repeatedly and while servers run.",
    )
    add_database_options(migrate_keys)
    migrate_keys.add_argument(
        "--per-visitor",
        action="store_true",
        help="also re-seal values about a visitor, sealed before the key vault, under the "
        "visitor's own key, so that erasing them reaches backups taken from now on",
    )
    migrate_keys.set_defaults(handler=_handler(_keys_migrate, configure))
    status = keys_sub.add_parser("status", help="where the master key comes from; data keys")
    add_database_options(status)
    status.set_defaults(handler=_handler(_keys_status, configure))

    vault = subparsers.add_parser(
        "vault",
        help="the key vault of visitor keys (kept out of data backups)",
        description="The visitor keys live in a key vault outside the data backups "
        "(docs/security.md): erasing a visitor destroys their key, so backups taken before "
        "cannot be read for them once the vault backups older than the erasure have expired.",
    )
    vault_sub = vault.add_subparsers(dest="vault_command", metavar="ACTION", required=True)
    vault_backup = vault_sub.add_parser(
        "backup",
        help="write the vault to a file (keep these briefly, e.g. 7 days)",
        description="Write every visitor key (wrapped by its workspace's data key) as JSON "
        "Lines. Keep vault backups for a short time only: an erasure reaches old data backups "
        "when the vault backups taken before it have expired.",
    )
    add_database_options(vault_backup)
    vault_backup.add_argument("--out", required=True, help="file to write (replaced atomically)")
    vault_backup.set_defaults(handler=_handler(_vault_backup, configure))
    vault_restore = vault_sub.add_parser(
        "restore",
        help="put visitor keys back from a vault backup (a lost or damaged vault)",
        description="Copy the keys of this database's visitors from a vault backup (or a "
        "SQLite vault file) into its vault; keys already there are kept. Keys of visitors "
        "erased since the vault backup are not restored: their rows are gone.",
    )
    add_database_options(vault_restore)
    vault_restore.add_argument("--from", dest="source", required=True, help="vault backup")
    vault_restore.set_defaults(handler=_handler(_vault_restore, configure))


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
    async with open_backend(url, keyring=args.keyring, blobs=args.blobs) as storage:
        version = await storage.schema_version()
    print(f"schema version {version} ({storage.backend_name})")


def _require_ring(args: argparse.Namespace) -> MasterKeyRing:
    if args.keyring is None:
        raise EncryptionError(
            "no master key: set master_key / LIVECHAT_MASTER_KEY or master_key_file"
            " (SQLite: the key file next to the database is created by the first server start)"
        )
    ring: MasterKeyRing = args.keyring
    return ring


def _key_texts(args: argparse.Namespace) -> list[str]:
    """The configured master keys as text, current first."""
    path: Path | None = args.key_file
    text = path.read_text(encoding="ascii") if path is not None else args.settings_key or ""
    return text.replace(",", " ").split()


async def _keys_rotate(args: argparse.Namespace, url: str) -> None:
    old = _require_ring(args)
    path: Path | None = args.key_file
    texts = _key_texts(args)
    if args.retire_old:
        texts = texts[:1]
    else:
        texts = [new_master_key_text(), *texts]
        if path is not None:
            # The file first: should the re-wrap fail, every key is there to open the data keys.
            await trio.to_thread.run_sync(write_key_file, path, texts)
    new = MasterKeyRing(parse_master_keys(",".join(texts)), source=old.source)
    async with open_backend(url, keyring=old, blobs=args.blobs) as storage:
        count = await storage.rotate_master_key(new)
    if args.retire_old and path is not None:
        await trio.to_thread.run_sync(write_key_file, path, texts)
    print(f"re-wrapped {count} data keys under master key {new.current_id}")
    if args.retire_old:
        print("older master keys retired" + ("" if path else f": set the master key to {texts[0]}"))
    elif path is not None:
        print(
            f"{path}: the new key first, the old one(s) kept for servers not yet restarted;"
            " once every server has restarted, run `livechat keys rotate --retire-old`."
            " Back up the key file separately from the database."
        )
    else:
        print(
            "set the master key to this (shown once; the old key follows it until every server"
            f" has restarted, then run `livechat keys rotate --retire-old`):\n{','.join(texts)}"
        )


async def _keys_migrate(args: argparse.Namespace, url: str) -> None:
    ring = _require_ring(args)
    async with open_backend(url, keyring=ring, blobs=args.blobs) as storage:
        count = await storage.seal_plaintext()
        resealed = await storage.reseal_per_visitor() if args.per_visitor else 0
    print(f"encrypted {count} rows that were stored in plaintext")
    if args.per_visitor:
        print(f"re-sealed {resealed} rows under their visitor's key")


async def _keys_status(args: argparse.Namespace, url: str) -> None:
    ring = args.keyring
    async with open_backend(url, keyring=ring, blobs=args.blobs) as storage:
        rows = await storage._fetch(
            "SELECT master_key_id, COUNT(*) AS n FROM data_keys GROUP BY master_key_id"
        )
    if ring is None:
        print("no master key configured: values are stored in plaintext")
    else:
        ids = ", ".join(ring.ids)
        print(f"master key from {ring.source}; current {ring.current_id}; all {ids}")
    for row in rows:
        print(f"data keys wrapped by {row['master_key_id']}: {row['n']}")


async def _audit_verify(args: argparse.Namespace, url: str) -> None:
    async with open_backend(url, keyring=args.keyring, blobs=args.blobs) as storage:
        if args.workspace is None:
            chains = await storage.audit_chains()
        elif args.workspace == "server":
            chains = [None]
        else:
            if await storage.get_workspace(args.workspace) is None:
                raise StorageError(f"workspace {args.workspace!r} not found")
            chains = [args.workspace]
        broken = []
        for chain in chains:
            report = await storage.verify_audit(chain)
            name = "server" if chain is None else f"workspace {chain}"
            if report.ok:
                print(
                    f"{name}: ok, {report.entries} entries,"
                    f" head {report.head_seq} {report.head_hash}"
                )
            else:
                where = f"entry {report.broken_at}" if report.broken_at is not None else "entry"
                ident = f" (id {report.broken_id})" if report.broken_id else ""
                line = f"{name}: BROKEN at {where}{ident}: {report.problem}"
                print(line)
                broken.append(line)
    if broken:
        raise AuditChainBroken(f"{len(broken)} audit chain(s) broken; first: {broken[0]}")


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
    async with open_backend(url, keyring=args.keyring, blobs=args.blobs) as storage:
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
    vault_rows = None
    if args.vault is not None:
        vault_rows = await trio.to_thread.run_sync(read_vault_file, args.vault)
    if expected is None:
        await _restore_sqlite_file(args.source, url, args.keyring, args.blobs)
    else:
        await _restore_jsonl(args.source, url, expected, args.keyring, args.blobs)
    if args.keyring is not None:
        async with open_backend(url, keyring=args.keyring, blobs=args.blobs) as storage:
            erased = await apply_vault(storage, vault_rows)
        if erased:
            print(f"{erased} visitors erased after the backup was taken: restored as erased")


async def apply_vault(storage: Any, rows: list[dict[str, Any]] | None) -> int:
    """Give the restored visitors their keys from ``rows`` (a vault); the visitors whose key
    is not there were erased after the backup: delete their rows (audited, actor
    ``restore``) so the restored database holds nothing unreadable. Returns how many."""
    if rows is not None:
        await storage.import_vault_rows(rows)
    erased = await storage.keyless_visitors()
    if erased and rows is None:
        raise RestoreError(
            f"{len(erased)} visitors' data is sealed with visitor keys: give the key vault"
            " (--vault <database>.vault, or a `livechat vault backup` file)"
        )
    for workspace_id, visitor_id in erased:
        await storage.erase_visitor(workspace_id, visitor_id, actor="restore")
    return len(erased)


async def _vault_backup(args: argparse.Namespace, url: str) -> None:
    async with open_backend(url, keyring=_require_ring(args), blobs=args.blobs) as storage:
        rows = await storage.vault_rows()

    async def lines() -> AsyncIterator[str]:
        for line in vault_backup_lines(rows):
            yield line

    await _write_lines(args.out, lines())
    print(f"vault backup written to {args.out}: {len(rows)} visitor keys")


async def _vault_restore(args: argparse.Namespace, url: str) -> None:
    rows = await trio.to_thread.run_sync(read_vault_file, args.source)
    async with open_backend(url, keyring=_require_ring(args), blobs=args.blobs) as storage:
        restored = await storage.import_vault_rows(rows)
        await storage.check_data_keys()  # the vault is usable again
    print(f"{restored} visitor keys restored from {args.source}")


async def _restore_jsonl(
    source: str,
    url: str,
    expected: dict[str, int],
    keyring: MasterKeyRing | None,
    blobs: BlobStore,
) -> None:
    async with open_backend(url, keyring=keyring, blobs=blobs) as storage:
        restored = await storage.import_jsonl(_read_lines(source))
        await _verify(storage, expected)
        # Encrypted data: the right master key is configured (the vault comes after).
        await storage.check_data_keys(vault=False)
    print(f"restored {restored} rows from {source}; counts verified")


async def _verify(storage: Any, expected: dict[str, int]) -> None:
    actual = await table_counts(storage)
    wrong = {t: (n, actual.get(t, 0)) for t, n in expected.items() if actual.get(t, 0) != n}
    if wrong:
        raise RestoreError(f"verification failed, (expected, found) rows per table: {wrong}")
    check = getattr(storage, "integrity_check", None)
    if check is not None and (result := await check()) != "ok":
        raise RestoreError(f"integrity check failed: {result}")


async def _restore_sqlite_file(
    source: str, url: str, keyring: MasterKeyRing | None, blobs: BlobStore
) -> None:
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
        async with open_backend(
            f"sqlite:///{copy}", keyring=keyring, files_dir=sidecar
        ) as original:
            expected = await table_counts(original)
            # Encrypted data needs the master key of the server the backup came from.
            await original.check_data_keys(vault=False)  # the backup has no vault: --vault
            async with open_backend(url, keyring=keyring, blobs=blobs) as target:
                await target.import_jsonl(export_jsonl(original, None, visitor_id=None))
                await _verify(target, expected)
    print(f"restored {sum(expected.values())} rows from {source} into {backend}; verified")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


async def _export(args: argparse.Namespace, url: str) -> None:
    if args.visitor and args.format == "csv":
        raise StorageError("--visitor exports are JSON Lines only (use --format jsonl)")
    async with open_backend(url, keyring=args.keyring, blobs=args.blobs) as storage:
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
