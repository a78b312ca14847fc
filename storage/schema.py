"""Versioned, forward-only schema migrations, one SQL file per version and backend.

Files live in ``storage/migrations/<backend>/NNNN_name.sql``. Pending files are applied in one
transaction at open (and by ``livechat migrate``), each recorded in ``schema_migrations``; on
PostgreSQL an advisory lock makes concurrently starting servers take turns. A database whose
version is newer than this program's files is refused (``MigrationError``): downgrades are not
supported.
"""

from __future__ import annotations

import re
import time
from importlib import resources
from typing import Final

import attrs

from storage._audit import repair_chains_program
from storage._sql import PostgresDialect, Program, Q, SQLiteDialect
from storage.errors import MigrationError

PG_MIGRATION_LOCK_ID: Final = 0x4C43_5354  # "LCST": serialises migrations across processes
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """This program's migrations for ``backend`` ("sqlite" or "postgresql"), in order."""
    folder = resources.files("storage") / "migrations" / backend
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"{backend} migrations are not numbered 0001, 0002, ... without gaps")
    return found


def migrate_program(backend: str) -> Program[int]:
    """Apply what is pending; returns the resulting schema version."""
    if backend == "postgresql":
        yield Q("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK_ID,))
    yield Q(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    result = yield Q("SELECT version FROM schema_migrations")
    applied = {int(row["version"]) for row in result.rows}
    known = migrations(backend)
    latest = known[-1].version if known else 0
    if applied and max(applied) > latest:
        raise MigrationError(
            f"the database schema is version {max(applied)}, newer than this program's"
            f" {latest}: upgrade livechat"
        )
    pending = [m for m in known if m.version not in applied]
    for migration in pending:
        yield Q(migration.sql, script=True)
        yield Q(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, time.time()),
        )
    if pending:
        # Audit entries written before the hash chain existed join it now (oldest first).
        dialect = SQLiteDialect() if backend == "sqlite" else PostgresDialect()
        yield from repair_chains_program(dialect)
    return latest


def version_program() -> Program[int]:
    result = yield Q("SELECT MAX(version) AS v FROM schema_migrations")
    row = result.one()
    return int(row["v"]) if row and row["v"] is not None else 0
