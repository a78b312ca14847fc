"""The export format (JSON Lines), the CSV report, and import into an empty database.

JSONL layout, one compact JSON object per line, UTF-8, non-ASCII kept as is::

    {"format":"livechat-export","version":1,"scope":"workspace","workspace_id":"...",...}
    {"table":"workspaces","row":{...}}
    ...
    {"file":{"id":"...","data":"<base64>"}}
    ...
    {"end":true,"counts":{"workspaces":1,"events":12345,...},"files":3}

Tables come parents first, rows in key order (byte order, on both backends), so exporting an
imported file reproduces it byte for byte. JSON columns appear as JSON values, not strings. The
trailer's counts let an import detect a truncated file. The bytes of the exported files
(``attachments`` rows) follow the tables, one ``file`` line each, base64; the trailer's ``files``
counts them and an import writes them to the target's file store. A whole-database export (scope
"database") is the PostgreSQL backup format and the SQLite-to-PostgreSQL migration path.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol, TypeVar

import attrs
import trio

from storage._attachments import open_file_bytes
from storage._audit import repair_chains_program
from storage._records import dump_json
from storage._sql import Dialect, Program, Q, Result
from storage._vault import drive, load_for_rows_program
from storage.blobs import BlobStore
from storage.crypto import SEARCHABLE_KINDS, DataKey, ErasedFile, is_sealed, plain_terms
from storage.errors import RestoreError

T = TypeVar("T")

FORMAT_NAME: Final = "livechat-export"
FORMAT_VERSION: Final = 1
CHUNK_ROWS: Final = 2000  # rows per fetch while exporting and per executemany while importing
_FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")


class _Tx(Protocol):
    async def run(self, q: Q) -> Result: ...


class _Store(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[_Tx]: ...

    @property
    def blobs(self) -> BlobStore: ...


@attrs.frozen
class _Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # unique, ordered: the keyset for chunked reads
    json_columns: frozenset[str] = frozenset()
    bool_columns: frozenset[str] = frozenset()


def _t(name: str, cols: str, key: str = "id", json_cols: str = "", bools: str = "") -> _Table:
    return _Table(
        name,
        tuple(cols.split()),
        tuple(key.split()),
        frozenset(json_cols.split()),
        frozenset(bools.split()),
    )


# Parents before children, so rows import in order with foreign keys on.
TABLES: Final = (
    _t(
        "workspaces",
        "id name widget_key identity_secret allowed_origins settings agent_seats"
        " max_concurrent_chats retention_days status terminated_at created_at",
        json_cols="allowed_origins settings",
    ),
    _t("agent_groups", "id workspace_id name fallback_group_id"),
    _t(
        "agents",
        "id workspace_id username display_name email role password_hash enabled"
        " max_chats group_ids avatar_url created_at password_changed_at",
        json_cols="group_ids",
        bools="enabled",
    ),
    _t(
        "agent_two_factor",
        "agent_id workspace_id totp_secret confirmed_at recovery_hashes last_step created_at",
        key="agent_id",
        json_cols="recovery_hashes",
    ),
    _t(
        "workspace_sso",
        "workspace_id slug issuer client_id client_secret role_claim role_map default_role"
        " sso_only enabled updated_at",
        key="workspace_id",
        json_cols="role_map",
        bools="sso_only enabled",
    ),
    _t("sso_identities", "id workspace_id issuer subject agent_id created_at"),
    _t(
        "visitors",
        "id workspace_id token_hash external_id name email attributes user_agent ip"
        " visits first_seen_at last_seen_at",
        json_cols="attributes",
    ),
    _t("page_views", "id workspace_id visitor_id url title referrer at"),
    _t(
        "trigger_firings",
        "workspace_id visitor_id trigger_id fired_at",
        key="visitor_id trigger_id",  # visitor ids are unique across workspaces
    ),
    _t(
        "conversations",
        "id workspace_id visitor_id state close_reason group_id assignee_id"
        " previous_assignee_id participant_ids tags rating rating_comment last_seq created_at"
        " first_response_at closed_at last_activity_at origin_key",
        json_cols="participant_ids tags",
    ),
    _t(
        "events",
        "workspace_id conversation_id seq kind visibility author_type author_id body"
        " data client_msg_id created_at search_terms",
        key="conversation_id seq",
        json_cols="data",
    ),
    _t("canned_responses", "id workspace_id shortcut text"),
    _t(
        "attachments",
        "id workspace_id uploader_type uploader_id visitor_id conversation_id name content_type"
        " size created_at sent_at",
    ),
    _t(
        "routing_decisions",
        "id workspace_id conversation_id agent_id reason details at",
        json_cols="details",
    ),
    _t("bans", "id workspace_id kind value reason created_at expires_at"),
    _t(
        "audit_log",
        "id workspace_id actor action target details ip at seq prev_hash hash",
        json_cols="details",
    ),
    _t(
        "api_tokens",
        "id workspace_id agent_id name token_hash scopes created_at revoked_at last_used_at",
        json_cols="scopes",
    ),
    _t(
        "sessions",
        "id_hash agent_id workspace_id csrf_token created_at last_seen_at",
        key="id_hash",
    ),
    _t("secrets", "name value", key="name"),
    # Wrapped by the master key (never in the database). Only in whole-database backups; a
    # workspace export is decrypted instead (see ``export_jsonl``).
    _t("data_keys", "workspace_id wrapped master_key_id", key="workspace_id"),
)
_BY_NAME: Final = {t.name: t for t in TABLES}


def _scope(
    table: _Table, workspace_id: str | None, visitor_id: str | None, *, sealed: bool = False
) -> tuple[str, list[Any]] | None:
    """The WHERE clause selecting this table's rows of the export's scope; None: table skipped."""
    if workspace_id is None:  # the whole database
        return "1=1", []
    if visitor_id is None:
        if table.name == "secrets" or (table.name == "data_keys" and not sealed):
            return None
        if table.name == "workspaces":
            return "id=?", [workspace_id]
        return "workspace_id=?", [workspace_id]
    theirs = "SELECT id FROM conversations WHERE workspace_id=? AND visitor_id=?"
    return {
        "visitors": ("workspace_id=? AND id=?", [workspace_id, visitor_id]),
        "page_views": ("workspace_id=? AND visitor_id=?", [workspace_id, visitor_id]),
        "trigger_firings": ("workspace_id=? AND visitor_id=?", [workspace_id, visitor_id]),
        "conversations": ("workspace_id=? AND visitor_id=?", [workspace_id, visitor_id]),
        "events": (
            f"workspace_id=? AND conversation_id IN ({theirs})",
            [workspace_id, workspace_id, visitor_id],
        ),
        "routing_decisions": (
            f"workspace_id=? AND conversation_id IN ({theirs})",
            [workspace_id, workspace_id, visitor_id],
        ),
        "attachments": ("workspace_id=? AND visitor_id=?", [workspace_id, visitor_id]),
    }.get(table.name)


def _exported(table: _Table, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row[column]
        if value is not None:
            if column in table.json_columns and not is_sealed(value):  # sealed: text as stored
                value = json.loads(value)
            elif column in table.bool_columns:
                value = bool(value)
        out[column] = value
    return out


def _after_key(table: _Table, dialect: Dialect, last: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Keyset condition: rows strictly after ``last`` in key order."""
    if len(table.key) == 1:
        return f"{dialect.byte_order(table.key[0])}>?", [last[table.key[0]]]
    first, second = table.key
    return (
        f"({dialect.byte_order(first)}>? OR ({first}=? AND {second}>?))",
        [last[first], last[first], last[second]],
    )


async def export_jsonl(
    store: _Store,
    workspace_id: str | None,
    *,
    visitor_id: str | None,
    key: DataKey | None = None,
    sealed: bool = False,
) -> AsyncIterator[str]:
    """Stream the export (each item one line with its newline) from one consistent snapshot.

    ``key``: the workspace's data key; sealed columns are exported decrypted with it. A
    whole-database export (a backup) is never decrypted: it holds the wrapped data keys; so
    does a ``sealed`` workspace export (``POST /backups``): values as stored, and the
    workspace's data key wrapped by the master key.
    """
    dialect = store.dialect
    scope = "database" if workspace_id is None else "visitor" if visitor_id else "workspace"
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "scope": scope,
        "workspace_id": workspace_id,
        "visitor_id": visitor_id,
    }
    yield dump_json(header) + "\n"
    counts: dict[str, int] = {}
    file_ids: list[str] = []
    async with store.transaction(write=False) as tx:
        for table in TABLES:
            where = _scope(table, workspace_id, visitor_id, sealed=sealed)
            if where is None:
                continue
            base_sql, base_args = where
            # The first key column is text (byte order); a second one is the integer seq.
            order = ",".join([dialect.byte_order(table.key[0]), *table.key[1:]])
            last: Mapping[str, Any] | None = None
            counts[table.name] = 0
            while True:
                sql, args = base_sql, list(base_args)
                if last is not None:
                    after, after_args = _after_key(table, dialect, last)
                    sql, args = f"{sql} AND {after}", args + after_args
                result = await tx.run(
                    Q(
                        f"SELECT {','.join(table.columns)} FROM {table.name} WHERE {sql}"
                        f" ORDER BY {order} LIMIT {CHUNK_ROWS}",
                        args,
                    )
                )
                if key is not None:  # the visitor keys these rows need (storage._vault)
                    await drive(tx, load_for_rows_program(key, result.rows))
                for row in result.rows:
                    if key is not None:
                        row = key.open_row(table.name, row)
                        if "search_terms" in row:
                            row["search_terms"] = None  # keyed tokens: no use outside
                    yield dump_json({"table": table.name, "row": _exported(table, row)}) + "\n"
                if table.name == "attachments":
                    file_ids.extend(str(row["id"]) for row in result.rows)
                counts[table.name] += len(result.rows)
                if len(result.rows) < CHUNK_ROWS:
                    break
                last = result.rows[-1]
    files = 0
    for file_id in file_ids:
        data = await store.blobs.get(file_id)
        if data is None:  # erased since the snapshot: its row restores without bytes
            continue
        if key is not None:  # the customer's readable copy (a backup keeps the sealed bytes)
            try:
                data = await open_file_bytes(key, data, file_id)
            except ErasedFile:  # its visitor's key is destroyed: as good as gone
                continue
        encoded = base64.b64encode(data).decode("ascii")
        yield dump_json({"file": {"id": file_id, "data": encoded}}) + "\n"
        files += 1
    yield dump_json({"end": True, "counts": counts, "files": files}) + "\n"


async def import_jsonl(store: _Store, lines: AsyncIterator[str]) -> int:
    """Restore an export into an EMPTY database, all in one transaction; rows restored.

    Raises ``RestoreError`` (nothing restored) when the database already holds workspaces, the
    header is not ours, a line is malformed, or the file is truncated (no trailer or counts
    that differ from the rows read). File bytes are written to the target's file store as they
    are read; when the restore fails they are deleted again, like the rows.
    """
    written: list[str] = []
    try:
        async with store.transaction(write=True) as tx:
            return await _import_lines(store, tx, lines, written)
    except BaseException:
        with trio.CancelScope(shield=True):
            await store.blobs.delete(written)
        raise


async def _import_lines(
    store: _Store, tx: _Tx, lines: AsyncIterator[str], written: list[str]
) -> int:
    counts: dict[str, int] = defaultdict(int)
    pending: dict[str, list[list[Any]]] = defaultdict(list)
    file_rows: set[str] = set()  # ids of the attachments rows read: the only bytes accepted
    total = 0
    seen_header = False
    trailer: Mapping[str, Any] | None = None
    existing = await tx.run(Q("SELECT COUNT(*) AS n FROM workspaces"))
    if existing.rows[0]["n"]:
        raise RestoreError("the target database is not empty (it already has workspaces)")
    line_no = 0
    async for line in lines:
        line_no += 1
        if not line.strip():
            continue
        if trailer is not None:
            raise RestoreError(f"line {line_no}: data after the end marker")
        try:
            item = json.loads(line)
        except ValueError as err:
            raise RestoreError(f"line {line_no}: not JSON ({err})") from err
        if not seen_header:
            _check_header(item)
            seen_header = True
            continue
        if item.get("end") is True:
            trailer = item
            continue
        if "file" in item:
            file_id, data = _file_line(item["file"], file_rows, line_no)
            await store.blobs.put(file_id, data)
            written.append(file_id)
            continue
        table = _BY_NAME.get(item.get("table", ""))
        row = item.get("row")
        if table is None or not isinstance(row, dict):
            raise RestoreError(f"line {line_no}: unknown table or malformed row")
        if table.name == "events":
            row = _with_plain_terms(row)
        try:
            pending[table.name].append(_imported(table, row))
        except (KeyError, TypeError) as err:
            raise RestoreError(f"line {line_no}: row of {table.name}: {err}") from err
        if table.name == "attachments":
            file_rows.add(str(row["id"]))
        counts[table.name] += 1
        total += 1
        if len(pending[table.name]) >= CHUNK_ROWS:
            await _flush(tx, pending)
    await _flush(tx, pending)
    if not seen_header:
        raise RestoreError("empty file: no export header")
    if trailer is None:
        raise RestoreError("truncated export: the end marker is missing")
    expected = {k: v for k, v in dict(trailer.get("counts", {})).items() if v}
    if expected != {k: v for k, v in counts.items() if v}:
        raise RestoreError(f"row counts differ: file says {expected}, read {dict(counts)}")
    if int(trailer.get("files", 0)) != len(written):
        raise RestoreError(
            f"file counts differ: file says {trailer.get('files')}, read {len(written)}"
        )
    # Chain heads are not exported: rebuilt from the restored log, which keeps its hashes.
    await _drive(tx, repair_chains_program(store.dialect))
    return total


def _file_line(value: Any, file_rows: set[str], line_no: int) -> tuple[str, bytes]:
    """The id and bytes of a ``file`` line, for an attachments row already read."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), str):
        raise RestoreError(f"line {line_no}: malformed file line")
    file_id = str(value.get("id"))
    if file_id not in file_rows:
        raise RestoreError(f"line {line_no}: file {file_id!r} has no attachments row")
    try:
        return file_id, base64.b64decode(value["data"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RestoreError(f"line {line_no}: file {file_id!r} is not base64") from err


async def _drive(tx: _Tx, program: Program[T]) -> T:
    """Run a transaction program on an open transaction, statement by statement."""
    try:
        q = next(program)
        while True:
            q = program.send(await tx.run(q))
    except StopIteration as done:
        result: T = done.value
        return result


def _check_header(item: Any) -> None:
    if not isinstance(item, dict) or item.get("format") != FORMAT_NAME:
        raise RestoreError("not a livechat export (bad header line)")
    if item.get("version") != FORMAT_VERSION:
        raise RestoreError(f"unsupported export version {item.get('version')!r}")
    if item.get("scope") == "visitor":
        raise RestoreError("a visitor export is a data-subject copy and cannot be restored")


# schema 0002: origin_key; 0007: the audit hash chain (older entries are chained on restore)
# search_terms: the blind index (older exports: computed at import, or sealed and indexed at
# the next server start)
_ADDED_LATER: Final = frozenset({"origin_key", "seq", "prev_hash", "hash", "search_terms"})


def _with_plain_terms(row: dict[str, Any]) -> dict[str, Any]:
    """A plaintext body (a decrypted workspace export, an old export) is indexed by its plain
    words; a server with a master key seals and re-indexes it at start. A sealed body keeps
    the keyed tokens it was exported with (a whole-database backup: same data keys)."""
    body = row.get("body")
    if isinstance(body, str) and not is_sealed(body):
        terms = plain_terms(body) if row.get("kind") in SEARCHABLE_KINDS else None
        return {**row, "search_terms": terms}
    return row


def _imported(table: _Table, row: Mapping[str, Any]) -> list[Any]:
    values = []
    for column in table.columns:
        # Columns added after the first export format are absent from older files: NULL.
        value = row.get(column) if column in _ADDED_LATER else row[column]
        if value is not None and column in table.json_columns and not is_sealed(value):
            value = dump_json(value)
        elif isinstance(value, int) and not isinstance(value, bool) and column.endswith("_at"):
            value = float(value)
        values.append(value)
    return values


async def _flush(tx: _Tx, pending: dict[str, list[list[Any]]]) -> None:
    # Parents first: a child chunk may reference parents still buffered.
    for table in TABLES:
        rows = pending.pop(table.name, None)
        if not rows:
            continue
        marks = ",".join("?" * len(table.columns))
        sql = f"INSERT INTO {table.name} ({','.join(table.columns)}) VALUES ({marks})"
        if table.name == "secrets":
            sql += " ON CONFLICT (name) DO UPDATE SET value=excluded.value"
        await tx.run(Q(sql, many=rows))


# ---------------------------------------------------------------- CSV

CSV_COLUMNS: Final = (
    "conversation_id",
    "created_at",
    "state",
    "close_reason",
    "visitor_id",
    "visitor_name",
    "visitor_email",
    "group_id",
    "assignee_id",
    "tags",
    "rating",
    "rating_comment",
    "first_response_s",
    "closed_at",
    "events",
)


def escape_cell(value: Any) -> str:
    """Neutralise spreadsheet formulas: a cell starting with = + - @ TAB CR gets a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.datetime.fromtimestamp(float(at), datetime.UTC).isoformat()


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([escape_cell(v) for v in values])
    return buffer.getvalue()


async def export_csv(
    store: _Store, workspace_id: str, *, key: DataKey | None = None
) -> AsyncIterator[str]:
    """One row per conversation, oldest first, from one snapshot; each item is one CSV line.
    ``key``: the workspace's data key, to decrypt the visitors' names and emails."""
    dialect = store.dialect
    yield _csv_line(CSV_COLUMNS)
    last: tuple[float, str] | None = None
    async with store.transaction(write=False) as tx:
        while True:
            where = "c.workspace_id=?"
            args: list[Any] = [workspace_id]
            if last is not None:
                where += (
                    f" AND (c.created_at>? OR (c.created_at=? AND {dialect.byte_order('c.id')}>?))"
                )
                args += [last[0], last[0], last[1]]
            result = await tx.run(
                Q(
                    "SELECT c.id, c.created_at, c.state, c.close_reason, c.visitor_id, v.name,"
                    " v.email, c.group_id, c.assignee_id, c.tags, c.rating, c.rating_comment,"
                    " c.first_response_at, c.closed_at, c.last_seq"
                    " FROM conversations c LEFT JOIN visitors v ON v.id = c.visitor_id"
                    f" WHERE {where} ORDER BY c.created_at, {dialect.byte_order('c.id')}"
                    f" LIMIT {CHUNK_ROWS}",
                    args,
                )
            )
            if key is not None:  # the visitors' keys (storage._vault)
                await drive(tx, load_for_rows_program(key, result.rows))
            for row in result.rows:
                if key is not None:
                    for column in ("name", "email"):
                        if row[column] is not None:
                            row[column] = key.open(row[column], f"visitors.{column}")
                    if row["rating_comment"] is not None:
                        row["rating_comment"] = key.open(
                            row["rating_comment"], "conversations.rating_comment"
                        )
                first = row["first_response_at"]
                yield _csv_line(
                    [
                        row["id"],
                        _iso(row["created_at"]),
                        row["state"],
                        row["close_reason"],
                        row["visitor_id"],
                        row["name"],
                        row["email"],
                        row["group_id"],
                        row["assignee_id"],
                        ", ".join(json.loads(row["tags"])),
                        row["rating"],
                        row["rating_comment"],
                        None
                        if first is None
                        else round(float(first) - float(row["created_at"]), 3),
                        _iso(row["closed_at"]),
                        row["last_seq"],
                    ]
                )
            if len(result.rows) < CHUNK_ROWS:
                break
            last = (float(result.rows[-1]["created_at"]), result.rows[-1]["id"])


async def table_counts(store: _Store) -> dict[str, int]:
    """Rows per exported table, from one snapshot (restore verification)."""
    counts: dict[str, int] = {}
    async with store.transaction(write=False) as tx:
        for table in TABLES:
            result = await tx.run(Q(f"SELECT COUNT(*) AS n FROM {table.name}"))
            counts[table.name] = int(result.rows[0]["n"])
    return counts
