"""The key vault: one key per visitor, kept OUTSIDE the data backups (docs/security.md,
"Erasure that reaches old backups").

Values about a visitor are sealed with their visitor key (``lc2:<visitor id>:…``, see
``storage.crypto``); the vault row holding that key is wrapped by the workspace's data key.
An erasure deletes the vault row first, so every copy of the visitor's data — including
backups taken before, which never contain the vault — becomes unreadable once the vault
backups older than the erasure have expired.

Where the vault lives:

* SQLite: its own file ``<database>.vault``, ``ATTACH``ed to every connection as ``vault``
  (the backup API copies ``main`` only, so ``livechat backup`` never holds it);
* PostgreSQL: its own schema, ``livechat_vault`` by default; a database URL with a
  ``search_path`` (one schema per tenant, per test) uses ``<that schema>_vault``. The
  whole-database backup exports the data tables only.

Reads stay synchronous: a read path loads the keys its rows name (``missing_visitors``, one
``SELECT … IN``, only for keys not cached) before ``DataKey.open_row``; a key the vault does not
hold is cached as erased and its values read as ``[erased]``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from storage import api
from storage._driver import Clock, SqlDriver, require_row
from storage._keys import data_key_program
from storage._records import codec, decode, dump_json
from storage._sql import Dialect, Program, Q, Result, Row
from storage.crypto import (
    KEY_BYTES,
    PREFIX,
    SEALED_DATA_FIELDS,
    DataKey,
    MasterKeyRing,
    new_data_key,
)
from storage.errors import EncryptionError, StorageError

T = TypeVar("T")

SQLITE_VAULT_SUFFIX: Final = ".vault"
DEFAULT_VAULT_SCHEMA: Final = "livechat_vault"
VAULT_BACKUP_HEADER: Final = {"livechat_vault": 1}
_IN_CHUNK: Final = 500  # visitor ids per ``IN`` list
_CONVERSATION_CACHE: Final = 10_000  # conversation -> sealer, for the append path
_SCHEMA_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_COLUMNS: Final = ("workspace_id", "visitor_id", "wrapped", "created_at")


class VaultError(StorageError):
    """The vault cannot be used as asked (a missing or malformed vault file, a restore that
    needs one)."""


def sqlite_vault_path(database_path: str) -> str:
    return database_path + SQLITE_VAULT_SUFFIX


def postgres_vault_schema(dsn: str) -> str:
    """``<first search_path schema>_vault`` when the URL sets one, else ``livechat_vault``."""
    paths = parse_qs(urlsplit(dsn).query).get("search_path")
    schema = f"{paths[0].split(',')[0].strip()}_vault" if paths else DEFAULT_VAULT_SCHEMA
    if not _SCHEMA_NAME.match(schema):
        raise VaultError(f"vault schema name {schema!r} is not a plain identifier")
    return schema


def ensure_program(table: str, *, postgres: bool) -> Program[None]:
    """Create the vault (schema and table) when missing; it is not part of the migrations
    because it is not in the data backups a migration may be replayed on."""
    if postgres:
        yield Q(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    yield Q(
        f"CREATE TABLE IF NOT EXISTS {table} (workspace_id TEXT NOT NULL,"
        " visitor_id TEXT NOT NULL, wrapped TEXT NOT NULL,"
        f" created_at {'DOUBLE PRECISION' if postgres else 'REAL'} NOT NULL,"
        " PRIMARY KEY (workspace_id, visitor_id))"
    )


def _in(ids: Sequence[str]) -> str:
    return ",".join("?" * len(ids))


def load_program(key: DataKey, visitor_ids: Iterable[str]) -> Program[None]:
    """Load these visitors' keys into ``key`` (absent from the vault: cached as erased)."""
    assert key.vault is not None
    ids = sorted(visitor_ids)
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        found = yield Q(
            f"SELECT visitor_id, wrapped FROM {key.vault}"
            f" WHERE workspace_id=? AND visitor_id IN ({_in(chunk)})",
            (key.workspace_id, *chunk),
        )
        wrapped = {str(r["visitor_id"]): str(r["wrapped"]) for r in found.rows}
        for visitor_id in chunk:
            key.load_visitor_key(visitor_id, wrapped.get(visitor_id))


def load_for_rows_program(key: DataKey, rows: Iterable[Mapping[str, Any]]) -> Program[None]:
    """Load the keys these rows' ``lc2:`` values need (nothing to do when all are cached)."""
    missing = key.missing_visitors(rows)
    if missing:
        yield from load_program(key, missing)


def create_key_program(
    key: DataKey, visitor_id: str, *, now: float, new_visitor: bool
) -> Program[None]:
    """Give the visitor a key (kept when one exists) and load it into ``key``. A visitor from
    before the vault gets one at its first sealed write, unless it is gone (erased meanwhile:
    no orphan key); a ``new_visitor``'s row is written after its key."""
    assert key.vault is not None
    if not new_visitor:
        found = yield Q(
            "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
            (visitor_id, key.workspace_id),
        )
        if found.one() is None:
            key.load_visitor_key(visitor_id, None)
            return
    raw = new_data_key()
    assert len(raw) == KEY_BYTES
    yield Q(
        f"INSERT INTO {key.vault} (workspace_id, visitor_id, wrapped, created_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, visitor_id) DO NOTHING",
        (key.workspace_id, visitor_id, key.wrap_visitor_key(visitor_id, raw), now),
    )
    yield from load_program(key, [visitor_id])


def conversation_sealers_program(
    keys: Mapping[str, DataKey | None],
    conversations: Iterable[tuple[str, str]],
    *,
    now: float,
    create: bool,
) -> Program[dict[str, DataKey]]:
    """The sealer of each (workspace, conversation) with a workspace key: its visitor's key.
    One ``SELECT … IN`` for the conversations' visitors, one for the keys not cached. A visitor
    from before the vault gets a key here when ``create`` (a write program), else its
    conversation is left out for the caller to handle."""
    ids = sorted({cid for ws, cid in conversations if keys.get(ws) is not None})
    rows: list[Row] = []
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        found = yield Q(
            f"SELECT id, workspace_id, visitor_id FROM conversations WHERE id IN ({_in(chunk)})",
            chunk,
        )
        rows += [r for r in found.rows if keys.get(str(r["workspace_id"])) is not None]
    for workspace_id in {str(r["workspace_id"]) for r in rows}:
        key = keys[workspace_id]
        assert key is not None
        refs = [{"v": f"lc2:{r['visitor_id']}:"} for r in rows if r["workspace_id"] == workspace_id]
        yield from load_for_rows_program(key, refs)
    out: dict[str, DataKey] = {}
    for row in rows:
        key = keys[str(row["workspace_id"])]
        assert key is not None
        visitor_id = str(row["visitor_id"])
        if key.sealer_for(visitor_id) is key:
            if not create:
                continue
            yield from create_key_program(key, visitor_id, now=now, new_visitor=False)
        out[str(row["id"])] = key.sealer_for(visitor_id)
    return out


def keyless_visitors_program(table: str) -> Program[list[tuple[str, str]]]:
    """(workspace, visitor) of visitors with values sealed by a visitor key that the vault
    does not hold: erased after the backup they were restored from."""
    found = yield Q(
        "SELECT v.workspace_id, v.id FROM visitors v WHERE NOT EXISTS (SELECT 1 FROM"
        f" {table} k WHERE k.workspace_id=v.workspace_id AND k.visitor_id=v.id) AND ("
        " v.attributes LIKE 'lc2:%' OR v.name LIKE 'lc2:%' OR v.email LIKE 'lc2:%'"
        " OR v.ip LIKE 'lc2:%' OR EXISTS (SELECT 1 FROM conversations c JOIN events e"
        " ON e.conversation_id=c.id WHERE c.visitor_id=v.id AND e.body LIKE 'lc2:%'))"
        " ORDER BY v.workspace_id, v.id"
    )
    return [(str(r["workspace_id"]), str(r["id"])) for r in found.rows]


def import_program(table: str, rows: Sequence[Mapping[str, Any]]) -> Program[int]:
    """Copy vault rows of visitors this database holds (a restore); returns how many."""
    count = 0
    for row in rows:
        found = yield Q(
            "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
            (row["visitor_id"], row["workspace_id"]),
        )
        if found.one() is None:
            continue
        result = yield Q(
            f"INSERT INTO {table} (workspace_id, visitor_id, wrapped, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, visitor_id) DO NOTHING",
            tuple(row[c] for c in _COLUMNS),
        )
        count += max(result.rowcount, 0)
    return count


def parse_vault_backup(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Rows of a ``livechat vault backup`` file (JSON Lines after a header line)."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, ValueError) as err:
        raise VaultError("not a livechat vault backup (no header line)") from err
    if header != VAULT_BACKUP_HEADER:
        raise VaultError("not a livechat vault backup (wrong header line)")
    rows = []
    for line in it:
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict) or set(row) != set(_COLUMNS):
                raise VaultError("a line of the vault backup is not a vault row")
            rows.append(row)
    return rows


def vault_backup_lines(rows: Iterable[Row]) -> Iterable[str]:
    yield json.dumps(VAULT_BACKUP_HEADER) + "\n"
    for row in rows:
        yield json.dumps({c: row[c] for c in _COLUMNS}, sort_keys=True) + "\n"


_VISITOR_COLUMNS: Final = ("name", "email", "attributes", "ip")


def reseal_program(
    key_of: Callable[[str], Program[DataKey]], *, now: float, batch: int = 500
) -> Program[int]:
    """Re-seal up to ``batch`` rows of values about a visitor still sealed with the workspace
    key (``lc1:``, written before the vault) under the visitor's key, giving the visitor one
    when needed; returns how many rows changed (``livechat keys migrate --per-visitor``), 0
    when done."""
    changed = 0

    def sealer(workspace_id: str, visitor_id: str) -> Program[DataKey]:
        key = yield from key_of(workspace_id)
        yield from create_key_program(key, visitor_id, now=now, new_visitor=False)
        return key.for_visitor(visitor_id)

    lc1 = " OR ".join(f"{c} LIKE 'lc1:%'" for c in _VISITOR_COLUMNS)
    found = yield Q(
        f"SELECT id, workspace_id, {','.join(_VISITOR_COLUMNS)} FROM visitors WHERE {lc1} LIMIT ?",
        (batch,),
    )
    for row in found.rows:
        seal = yield from sealer(str(row["workspace_id"]), str(row["id"]))
        touched = False
        for c in _VISITOR_COLUMNS:
            value = _reseal(seal, row[c], f"visitors.{c}")
            if value != row[c]:
                # Compare-and-set: a change written meanwhile (PostgreSQL) is kept.
                yield Q(
                    f"UPDATE visitors SET {c}=? WHERE id=? AND {c}=?", (value, row["id"], row[c])
                )
                touched = True
        changed += touched
    found = yield Q(
        "SELECT id, workspace_id, visitor_id, rating_comment FROM conversations"
        " WHERE rating_comment LIKE 'lc1:%' LIMIT ?",
        (batch,),
    )
    for row in found.rows:
        seal = yield from sealer(str(row["workspace_id"]), str(row["visitor_id"]))
        value = _reseal(seal, row["rating_comment"], "conversations.rating_comment")
        yield Q(
            "UPDATE conversations SET rating_comment=? WHERE id=? AND rating_comment=?",
            (value, row["id"], row["rating_comment"]),
        )
        changed += 1
    kinds = ",".join(f"'{k}'" for k in SEALED_DATA_FIELDS)
    found = yield Q(
        "SELECT e.workspace_id, e.conversation_id, e.seq, e.kind, e.body, e.data, c.visitor_id"
        " FROM events e JOIN conversations c ON c.id = e.conversation_id"
        f" WHERE e.body LIKE 'lc1:%' OR (e.kind IN ({kinds}) AND e.data LIKE '%\"lc1:%')"
        " LIMIT ?",
        (batch,),
    )
    for row in found.rows:
        seal = yield from sealer(str(row["workspace_id"]), str(row["visitor_id"]))
        body = _reseal(seal, row["body"], "events.body")
        data = row["data"]
        fields = SEALED_DATA_FIELDS.get(str(row["kind"]), ())
        if fields and isinstance(data, str):
            parsed = json.loads(data)
            for field in fields:
                parsed[field] = _reseal(seal, parsed.get(field), f"events.data.{field}")
            data = dump_json(parsed)
        if (body, data) == (row["body"], row["data"]):
            continue  # "lc1: in a field that is not sealed: nothing to do (and not counted)
        yield Q(
            "UPDATE events SET body=?, data=? WHERE conversation_id=? AND seq=?",
            (body, data, row["conversation_id"], row["seq"]),
        )
        changed += 1
    return changed


def _reseal(seal: DataKey, value: object, column: str) -> object:
    """An ``lc1:`` value opened with the workspace key and sealed with the visitor's."""
    if isinstance(value, str) and value.startswith(PREFIX):
        return seal.seal(seal.open(value, column), column)
    return value


class VaultStore(SqlDriver):
    """The vault part of ``SqlStorage`` (mixed in first; see the module docstring). It
    extends the driver's key handling: data keys know their vault, rows about a visitor
    open with the visitor's key."""

    def __init__(self, dialect: Dialect, *, clock: Clock) -> None:
        super().__init__(dialect, clock=clock)
        self._conversation_sealers: dict[str, DataKey] = {}  # for the append path

    async def use_keys(self, ring: MasterKeyRing | None) -> None:
        """See ``SqlDriver.use_keys``; with a ring, the vault is created if missing."""
        await super().use_keys(ring)
        self._conversation_sealers.clear()
        if ring is not None:
            await self._ensure_vault()

    async def data_key(self, workspace_id: str) -> DataKey | None:
        """See ``SqlDriver.data_key``; the key loads its visitors' keys from this vault."""
        key = await super().data_key(workspace_id)
        if key is not None and key.vault is None:
            key.vault = self.vault_table()
        return key

    async def _open_row(self, table: str, workspace_id: str, row: Row) -> Row:
        key = await self._ready_key(workspace_id, [row])
        return row if key is None else key.open_row(table, row)

    def vault_table(self) -> str:
        """The table holding the visitor keys (schema-qualified; see the module docstring)."""
        if self.backend_name == "postgresql":
            return f"{postgres_vault_schema(str(getattr(self, 'dsn', '')))}.visitor_keys"
        return "vault.visitor_keys"  # the attached ``<database>.vault``

    async def _ensure_vault(self) -> None:
        postgres = self.backend_name == "postgresql"
        await self._write(ensure_program(self.vault_table(), postgres=postgres))

    async def _check_vault(self) -> None:
        """Refuse a database whose visitors are sealed with visitor keys while its vault is
        empty (a moved database without its ``.vault`` file, a wrong ``search_path``): every
        visitor would read as erased, and new keys would replace the lost ones."""
        if self._keyring is None:
            return
        table = self.vault_table()

        def program() -> Program[bool]:
            keys = yield Q(f"SELECT 1 AS ok FROM {table} LIMIT 1")
            if keys.one() is not None:
                return True
            sealed = yield Q("SELECT 1 AS ok FROM visitors WHERE attributes LIKE 'lc2:%' LIMIT 1")
            return sealed.one() is None

        if not await self._read(program()):
            raise EncryptionError(
                f"the key vault ({self.vault_where()}) is empty but visitors are sealed with"
                " keys it should hold: put the vault back, or `livechat vault restore --from"
                " <vault backup>` (docs/security.md)"
            )

    def vault_where(self) -> str:
        """Where the vault is, for messages: a file (SQLite) or a schema (PostgreSQL)."""
        if self.backend_name == "postgresql":
            return f"schema {self.vault_table().split('.')[0]}"
        return sqlite_vault_path(str(getattr(self, "path", "")))

    async def _ready_key(
        self, workspace_id: str, rows: Iterable[Mapping[str, Any]]
    ) -> DataKey | None:
        """The workspace's data key with the visitor keys these rows need loaded."""
        key = await self.data_key(workspace_id)
        if key is not None:
            await self._load_visitor_keys(key, rows)
        return key

    async def _key_with_visitors(
        self, workspace_id: str, visitor_ids: Sequence[str]
    ) -> DataKey | None:
        """The workspace's data key with these visitors' keys loaded."""
        return await self._ready_key(workspace_id, [{"v": f"lc2:{v}:"} for v in visitor_ids])

    async def _read_conversations(self, sql: str, *args: Any) -> list[api.Conversation]:
        """Conversations from ``sql``, their rating comments opened (any workspaces)."""

        def program() -> Program[list[Row]]:
            found = yield Q(sql, args)
            return found.rows

        return await self._opened_conversations(await self._read(program()))

    async def _opened_conversations(self, rows: Sequence[Row]) -> list[api.Conversation]:
        keys: dict[str, DataKey | None] = {}
        for workspace_id in {str(row["workspace_id"]) for row in rows}:
            of_workspace = [row for row in rows if row["workspace_id"] == workspace_id]
            keys[workspace_id] = await self._ready_key(workspace_id, of_workspace)
        out = []
        for row in rows:
            key = keys[str(row["workspace_id"])]
            out.append(decode(api.Conversation, key.open_row("conversations", row) if key else row))
        return out

    async def _load_visitor_keys(self, key: DataKey, rows: Iterable[Mapping[str, Any]]) -> None:
        missing = key.missing_visitors(rows)
        if missing:
            await self._read(load_program(key, missing))

    async def _insert_new_visitor(self, visitor: api.Visitor) -> api.Visitor:
        """Insert a new visitor's row and give it a key, in one write (one transaction, one
        trip to the writer, before the visitor's first frame): the key first, then the row
        sealed with it. Nothing is left behind if the workspace is gone."""
        ws = visitor.workspace_id
        key = await self.data_key(ws)
        if key is None:
            return await self._insert(visitor, parent=("workspaces", ws, ws))
        record_codec = codec(api.Visitor)
        plain = dict(zip(record_codec.columns, record_codec.to_args(visitor), strict=True))
        now = self._clock()

        def program() -> Program[api.Visitor]:
            yield from create_key_program(key, visitor.id, now=now, new_visitor=True)
            sealed = key.for_visitor(visitor.id).seal_row(record_codec.table, plain)
            found = yield Q("SELECT 1 AS ok FROM workspaces WHERE id=?", (ws,))
            require_row(found.one(), "workspace", ws)
            yield Q(record_codec.insert_sql(), list(sealed.values()))
            return visitor

        return await self._write(program())

    async def _visitor_sealer(self, workspace_id: str, visitor_id: str) -> DataKey | None:
        """What seals values about this visitor: the workspace key bound to the visitor's key
        (created on first use); the workspace key alone when the visitor is gone."""
        key = await self.data_key(workspace_id)
        if key is None:
            return None
        if key.missing_visitors([{"v": f"lc2:{visitor_id}:"}]):
            await self._read(load_program(key, [visitor_id]))
        try:
            return key.for_visitor(visitor_id)
        except StorageError:
            pass
        await self._write(create_key_program(key, visitor_id, now=self._clock(), new_visitor=False))
        try:
            return key.for_visitor(visitor_id)
        except StorageError:
            return key  # the visitor is gone: whatever is written next fails its own check

    async def _batch_sealers(
        self, batch: Sequence[Sequence[api.AppendRequest]]
    ) -> dict[str, DataKey | None]:
        """The sealer of each conversation of an append batch (cached: a dictionary lookup a
        message; the conversations a batch meets first are read together, in one read)."""
        out: dict[str, DataKey | None] = {}
        if self._keyring is None:
            return out
        cache = self._conversation_sealers
        missing: dict[str, str] = {}  # conversation -> workspace
        for requests in batch:
            for request in requests:
                cid = request.conversation_id
                sealer = cache.get(cid)
                if sealer is not None and sealer.workspace_id == request.workspace_id:
                    out[cid] = sealer
                else:
                    missing[cid] = request.workspace_id
        if missing:
            keys = {ws: await self.data_key(ws) for ws in set(missing.values())}
            found = await self._read(
                conversation_sealers_program(
                    keys,
                    [(ws, cid) for cid, ws in missing.items()],
                    now=self._clock(),
                    create=False,
                )
            )
            for cid, workspace_id in missing.items():
                sealer = found.get(cid)
                if sealer is None:  # a visitor from before the vault, or no such conversation
                    sealer = await self._conversation_sealer(workspace_id, cid)
                else:
                    self._cache_sealer(cid, sealer)
                out[cid] = sealer
        return out

    def _cache_sealer(self, conversation_id: str, sealer: DataKey) -> None:
        if len(self._conversation_sealers) >= _CONVERSATION_CACHE:
            del self._conversation_sealers[next(iter(self._conversation_sealers))]
        self._conversation_sealers[conversation_id] = sealer

    async def _sealer_for_conversation(
        self, workspace_id: str, conversation_id: str
    ) -> DataKey | None:
        """What seals rows about a conversation (mail, files): its visitor's key; None
        without a key ring."""
        if self._keyring is None:
            return None
        sealer = self._conversation_sealers.get(conversation_id)
        if sealer is not None and sealer.workspace_id == workspace_id:
            return sealer
        return await self._conversation_sealer(workspace_id, conversation_id)

    async def _conversation_sealer(self, workspace_id: str, conversation_id: str) -> DataKey:
        def visitor_of() -> Program[str | None]:
            found = yield Q(
                "SELECT visitor_id FROM conversations WHERE id=? AND workspace_id=?",
                (conversation_id, workspace_id),
            )
            row = found.one()
            return None if row is None else str(row["visitor_id"])

        visitor_id = await self._read(visitor_of())
        key = await self.data_key(workspace_id)
        assert key is not None  # only called with a key ring
        if visitor_id is None:
            return key  # no such conversation: the batch program answers NotFound
        sealer = await self._visitor_sealer(workspace_id, visitor_id)
        assert sealer is not None
        self._cache_sealer(conversation_id, sealer)
        return sealer

    async def _destroy_visitor_key(self, workspace_id: str, visitor_id: str) -> None:
        """Delete the visitor's key in its own commit (before their rows: a crash between
        leaves rows that read as erased) and forget it here."""
        if self._keyring is None:
            return
        table = self.vault_table()
        await self._write(
            _delete_program(
                f"DELETE FROM {table} WHERE workspace_id=? AND visitor_id=?",
                (workspace_id, visitor_id),
            )
        )
        key = self._data_keys.get(workspace_id)
        if key is not None:
            key.forget_visitor(visitor_id)
        self._conversation_sealers.clear()

    async def _destroy_workspace_keys(self, workspace_id: str) -> None:
        if self._keyring is None:
            return
        await self._write(
            _delete_program(
                f"DELETE FROM {self.vault_table()} WHERE workspace_id=?", (workspace_id,)
            )
        )
        self._conversation_sealers.clear()

    # ------------------------------------------------------------ backup and restore

    async def vault_rows(self) -> list[Row]:
        """Every vault row (``livechat vault backup``)."""

        def program() -> Program[list[Row]]:
            found = yield Q(
                f"SELECT {','.join(_COLUMNS)} FROM {self.vault_table()}"
                " ORDER BY workspace_id, visitor_id"
            )
            return found.rows

        return await self._read(program())

    async def reseal_per_visitor(self) -> int:
        """Re-seal every value about a visitor still under the workspace key with the
        visitor's key, in batches; returns how many rows changed."""
        ring = self._keyring
        if ring is None:
            return 0
        keys: dict[str, DataKey] = {}
        table = self.vault_table()

        def key_of(workspace_id: str) -> Program[DataKey]:
            if workspace_id not in keys:
                key = yield from data_key_program(ring, workspace_id, create=False)
                if key is None:
                    raise EncryptionError(f"workspace {workspace_id!r} has sealed data, no key")
                key.vault = table
                keys[workspace_id] = key
            return keys[workspace_id]

        total = 0
        while changed := await self._write(reseal_program(key_of, now=self._clock())):
            total += changed
        self._conversation_sealers.clear()
        return total

    async def import_vault_rows(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Copy the keys of this database's visitors from another vault (a restore)."""
        return await self._write(import_program(self.vault_table(), rows))

    async def keyless_visitors(self) -> list[tuple[str, str]]:
        """Visitors whose values need a visitor key the vault does not hold (erased)."""
        return await self._read(keyless_visitors_program(self.vault_table()))


class _Tx(Protocol):
    async def run(self, q: Q) -> Result: ...


async def drive(tx: _Tx, program: Program[T]) -> T:
    """Run a program's statements in an open multi-await transaction."""
    try:
        q = next(program)
        while True:
            q = program.send(await tx.run(q))
    except StopIteration as stop:
        value: T = stop.value
        return value


def _delete_program(sql: str, args: Sequence[Any]) -> Program[int]:
    result = yield Q(sql, args)
    return result.rowcount


def read_vault_file(path: str) -> list[dict[str, Any]]:
    """The rows of a vault: a SQLite vault file (``<database>.vault``, opened read-only) or a
    ``livechat vault backup`` file. ``VaultError`` when it is neither."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(16)
    except OSError as err:
        raise VaultError(f"cannot read the vault {path}: {err}") from err
    if head == b"SQLite format 3\x00":
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                found = conn.execute(f"SELECT {','.join(_COLUMNS)} FROM visitor_keys").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise VaultError(f"{path} is not a livechat vault ({err})") from err
        return [dict(zip(_COLUMNS, row, strict=True)) for row in found]
    try:
        with open(path, encoding="utf-8") as lines:
            return parse_vault_backup(lines)
    except (UnicodeDecodeError, ValueError) as err:
        raise VaultError(f"{path} is not a livechat vault backup ({err})") from err
