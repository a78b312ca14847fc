"""Backend-neutral transaction programs: the sans-IO core shared by both backends.

Every query is written once as a *program*: a generator that yields ``Q`` statements and is sent
back a ``Result`` for each. A backend drives a program inside one transaction: SQLite runs the
whole generator in its writer (or a reader) thread, PostgreSQL runs it inside one asyncio task on
one pooled connection. So one Trio-to-driver hop serves a whole transaction, and the logic (seq
assignment, idempotency, patches, tenancy checks) exists exactly once.

SQL is written with ``?`` placeholders; the PostgreSQL backend rewrites them to ``$n``. No ``?``
may appear in a SQL string except as a placeholder.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Protocol, TypeVar

import attrs

T = TypeVar("T")

Row = dict[str, Any]

Column = tuple[str, str]
"""A column of a batch of rows: (name, PostgreSQL type such as ``text`` or ``bigint``)."""

# Search on PostgreSQL first looks for a full page among this many newest events of the
# workspace (see ``PostgresDialect.search``).
PG_SEARCH_RECENT_ROWS = 10_000

# Bound parameters per statement; SQLite >= 3.32 allows 32,766, this leaves room.
SQLITE_MAX_PARAMS = 30_000


@attrs.frozen
class Q:
    """One statement. ``many``: executemany over those argument rows. ``script``: a multi-
    statement DDL script without arguments (migrations)."""

    sql: str
    args: Sequence[Any] = ()
    many: Sequence[Sequence[Any]] | None = None
    script: bool = False


@attrs.frozen
class Result:
    """What a statement produced: its rows (possibly none) and the affected row count."""

    rows: list[Row]
    rowcount: int

    def one(self) -> Row | None:
        return self.rows[0] if self.rows else None


Program = Generator[Q, Result, T]


@attrs.frozen
class RowsInsert:
    """Rows to insert into ``table`` (``Dialect.insert_then_update``)."""

    table: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[Any]]


@attrs.frozen
class RowsUpdate:
    """Rows to update in ``table``: ``columns`` set WHERE ``key`` = each row's last value."""

    table: str
    key: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[Any]]


class Dialect(Protocol):
    """The few places the two SQL dialects differ."""

    name: str

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (...)`` for these values, with its arguments."""
        ...

    def byte_order(self, column: str) -> str:
        """``column`` compared and sorted by bytes, the same on both backends."""
        ...

    def lock_rows(self) -> str:
        """Suffix locking the selected rows for this transaction (empty for SQLite)."""
        ...

    def tag_filter(self, column: str) -> str:
        """A condition true when JSON array text ``column`` holds the string argument ``?``."""
        ...

    def insert_rows(
        self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        """INSERT many rows in as few statements as the backend allows (one per chunk).

        One statement per batch, not one per row: an executemany runs the statement (and, on
        SQLite, the FTS5 trigger, which flushes its pending terms per statement) once per row.
        """
        ...

    def update_rows(
        self, table: str, key: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        """UPDATE ``table`` SET columns WHERE key=row's last value, for each row."""
        ...

    def insert_then_update(self, insert: RowsInsert, update: RowsUpdate) -> list[Q]:
        """``insert_rows`` then ``update_rows``, in as few statements as the backend allows.

        PostgreSQL: ONE statement (the INSERT as a data-modifying CTE of the UPDATE), one
        round trip. Both run on the same snapshot and touch different tables, so this is the
        two statements' effect.
        """
        ...

    def rows_relation(
        self, alias: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, list[Any]]]:
        """``rows`` as a FROM item named ``alias`` with these column names, in chunks that fit
        one statement each: (SQL fragment, its arguments) per chunk."""
        ...

    def search(self, workspace_id: str, query: str, limit: int) -> Q:
        """Search of the blind index (``query`` from ``search_query``); columns
        conversation_id, seq, body (as stored: sealed), created_at; newest first."""
        ...

    def search_query(self, tokens: Sequence[str]) -> str | None:
        """Index tokens (keyed, or plain words without encryption) as the backend's query
        argument, all required; None when nothing to find."""
        ...


class SQLiteDialect:
    name = "sqlite"

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        marks = ",".join("?" * len(values))
        return f"{column} IN ({marks})", list(values)

    def byte_order(self, column: str) -> str:
        return column  # SQLite's default BINARY collation

    def lock_rows(self) -> str:
        return ""  # BEGIN IMMEDIATE already holds the database write lock

    def insert_rows(
        self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        names = ",".join(name for name, _ in columns)
        return [
            Q(f"INSERT INTO {table} ({names}) VALUES {marks}", args)
            for marks, args in _values_chunks(len(columns), rows)
        ]

    def update_rows(
        self, table: str, key: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        # A handful of rows per batch (one per conversation): executemany is cheap here and
        # needs no UPDATE ... FROM (SQLite >= 3.33).
        sets = ",".join(f"{name}=?" for name, _ in columns)
        return [Q(f"UPDATE {table} SET {sets} WHERE {key}=?", many=rows)]

    def insert_then_update(self, insert: RowsInsert, update: RowsUpdate) -> list[Q]:
        return [
            *self.insert_rows(insert.table, insert.columns, insert.rows),
            *self.update_rows(update.table, update.key, update.columns, update.rows),
        ]

    def rows_relation(
        self, alias: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, list[Any]]]:
        names = ",".join(f"column{i} AS {name}" for i, (name, _) in enumerate(columns, 1))
        return [
            (f"(SELECT {names} FROM (VALUES {marks})) AS {alias}", args)
            for marks, args in _values_chunks(len(columns), rows)
        ]

    def tag_filter(self, column: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE json_each.value = ?)"

    def search(self, workspace_id: str, query: str, limit: int) -> Q:
        sql = (
            "SELECT e.conversation_id, e.seq, e.body, e.created_at"
            " FROM events_fts JOIN events e ON e.rowid = events_fts.rowid"
            " WHERE events_fts MATCH ? AND e.workspace_id = ?"
            " ORDER BY events_fts.rowid DESC LIMIT ?"
        )
        return Q(sql, (query, workspace_id, limit))

    def search_query(self, tokens: Sequence[str]) -> str | None:
        # Each token quoted: user input can never be FTS5 syntax; all tokens must match.
        return " ".join('"' + t.replace('"', '""') + '"' for t in tokens) or None


class PostgresDialect:
    name = "postgresql"

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?::text[])", [list(values)]

    def byte_order(self, column: str) -> str:
        return f'{column} COLLATE "C"'

    def lock_rows(self) -> str:
        return " FOR UPDATE"

    def insert_rows(
        self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        if not rows:
            return []
        names = ",".join(name for name, _ in columns)
        relation, args = self._unnest("u", columns, rows)
        return [Q(f"INSERT INTO {table} ({names}) SELECT {names} FROM {relation}", args)]

    def update_rows(
        self, table: str, key: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[Q]:
        if not rows:
            return []
        sets = ",".join(f"{name}=u.{name}" for name, _ in columns)
        relation, args = self._unnest("u", [*columns, (key, "text")], rows)
        return [Q(f"UPDATE {table} SET {sets} FROM {relation} WHERE {table}.{key}=u.{key}", args)]

    def insert_then_update(self, insert: RowsInsert, update: RowsUpdate) -> list[Q]:
        inserts = self.insert_rows(insert.table, insert.columns, insert.rows)
        updates = self.update_rows(update.table, update.key, update.columns, update.rows)
        if not (inserts and updates):
            return [*inserts, *updates]
        ((insert_q,), (update_q,)) = inserts, updates
        # Placeholders are numbered in text order: the CTE's arguments come first.
        return [Q(f"WITH i AS ({insert_q.sql}) {update_q.sql}", [*insert_q.args, *update_q.args])]

    def rows_relation(
        self, alias: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, list[Any]]]:
        return [self._unnest(alias, columns, rows)] if rows else []

    def _unnest(
        self, alias: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """One array argument per column: the SQL text does not depend on the row count, so
        one prepared statement serves every batch."""
        casts = ",".join(f"?::{sql_type}[]" for _, sql_type in columns)
        names = ",".join(name for name, _ in columns)
        return f"unnest({casts}) AS {alias}({names})", [list(c) for c in zip(*rows, strict=True)]

    def tag_filter(self, column: str) -> str:
        return f"({column})::jsonb @> jsonb_build_array(?::text)"

    def search(self, workspace_id: str, query: str, limit: int) -> Q:
        # Two plans, each fast where the other is slow, chosen by the data in one statement:
        # - ``recent``: the workspace's newest PG_SEARCH_RECENT_ROWS events (by the
        #   (workspace_id, created_at) index) filtered on tsv. A common word fills the page here;
        #   then it IS the answer (every other match is older than the whole window).
        # - ``hits``: otherwise all matches from the GIN index, sorted. Only reached for words
        #   rarer than limit per window, so it fetches at most ~limit * total / window rows.
        #   (Fetching every match of a common word is what made the p99: ~9,000 heap pages.)
        # The count is an uncorrelated subquery: a one-time filter, so the path not taken
        # does not run at all.
        sql = (
            "WITH recent AS MATERIALIZED (SELECT conversation_id, seq, body, created_at"
            " FROM (SELECT conversation_id, seq, body, created_at, tsv FROM events"
            " WHERE workspace_id = ? ORDER BY created_at DESC LIMIT ?) newest"
            " WHERE tsv @@ to_tsquery('simple', ?) ORDER BY created_at DESC LIMIT ?),"
            " hits AS MATERIALIZED (SELECT conversation_id, seq, body, created_at FROM events"
            " WHERE tsv @@ to_tsquery('simple', ?) AND workspace_id = ?"
            " AND (SELECT count(*) FROM recent) < ?),"
            " top AS (SELECT * FROM recent WHERE (SELECT count(*) FROM recent) >= ?"
            " UNION ALL (SELECT * FROM hits ORDER BY created_at DESC LIMIT ?))"
            " SELECT conversation_id, seq, body, created_at FROM top ORDER BY created_at DESC"
        )
        window = PG_SEARCH_RECENT_ROWS
        args = (workspace_id, window, query, limit, query, workspace_id, limit, limit, limit)
        return Q(sql, args)

    def search_query(self, tokens: Sequence[str]) -> str | None:
        return " & ".join("'" + t.replace("'", "''") + "'" for t in tokens) or None


def _values_chunks(width: int, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
    """``(?,?),(?,?)...`` placeholders and flat arguments, chunked under the parameter limit."""
    per_chunk = max(1, SQLITE_MAX_PARAMS // max(1, width))
    row_marks = "(" + ",".join("?" * width) + ")"
    chunks = []
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        chunks.append((",".join([row_marks] * len(chunk)), [v for row in chunk for v in row]))
    return chunks
