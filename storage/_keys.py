"""Transaction programs over the ``data_keys`` table (see ``storage.crypto`` for the design)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from storage._records import dump_json
from storage._sql import Program, Q
from storage.crypto import (
    ROW_ID_COLUMNS,
    SEALED_COLUMNS,
    SEALED_DATA_FIELDS,
    SEARCHABLE_KINDS,
    DataKey,
    MasterKeyRing,
    is_sealed,
    new_data_key,
)

# Sealed by their own code: events above (body and tokens in one update), attachments by
# ``AttachmentStore.seal_plaintext_files`` (their bytes are in the blob store, not here).
SEALED_ELSEWHERE: Final = frozenset({"events", "attachments"})


def _context(workspace_id: str) -> str:
    return f"workspace:{workspace_id}"


def data_key_program(
    ring: MasterKeyRing, workspace_id: str, *, create: bool
) -> Program[DataKey | None]:
    """The workspace's data key, created (wrapped by the current master key) when missing and
    ``create``; None when missing and not ``create``."""
    found = yield Q(
        "SELECT wrapped, master_key_id FROM data_keys WHERE workspace_id=?", (workspace_id,)
    )
    row = found.one()
    if row is None:
        if not create:
            return None
        wrapped, master_id = ring.wrap(new_data_key(), _context(workspace_id))
        yield Q(
            "INSERT INTO data_keys (workspace_id, wrapped, master_key_id) VALUES (?, ?, ?)"
            " ON CONFLICT (workspace_id) DO NOTHING",
            (workspace_id, wrapped, master_id),
        )
        found = yield Q(
            "SELECT wrapped, master_key_id FROM data_keys WHERE workspace_id=?", (workspace_id,)
        )
        row = found.one()
        assert row is not None  # inserted above, or by a concurrent winner
    key = ring.unwrap(str(row["wrapped"]), str(row["master_key_id"]), _context(workspace_id))
    return DataKey(workspace_id, key)


def rewrap_program(old: MasterKeyRing, new: MasterKeyRing) -> Program[int]:
    """Re-wrap every data key under ``new``'s current master key; returns how many.

    ``old`` must open every key (a data key written meanwhile by a server that still has only
    the old master key is wrapped by a key ``old`` holds). The data keys are unchanged, so
    servers holding them in memory keep working throughout.
    """
    rows = yield Q("SELECT workspace_id, wrapped, master_key_id FROM data_keys")
    count = 0
    for row in rows.rows:
        workspace_id = str(row["workspace_id"])
        if row["master_key_id"] == new.current_id:
            continue
        key = old.unwrap(str(row["wrapped"]), str(row["master_key_id"]), _context(workspace_id))
        wrapped, master_id = new.wrap(key, _context(workspace_id))
        yield Q(
            "UPDATE data_keys SET wrapped=?, master_key_id=? WHERE workspace_id=?",
            (wrapped, master_id, workspace_id),
        )
        count += 1
    return count


def seal_plaintext_program(ring: MasterKeyRing, *, batch: int = 500) -> Program[int]:
    """Seal up to ``batch`` rows still holding plaintext in a sealed column (databases from
    before encryption, restored workspace exports); returns how many rows were sealed."""
    sealed = 0
    keys: dict[str, DataKey] = {}

    def key_of(workspace_id: str) -> Program[DataKey]:
        if workspace_id not in keys:
            key = yield from data_key_program(ring, workspace_id, create=True)
            assert key is not None
            keys[workspace_id] = key
        return keys[workspace_id]

    # Events: the body sealed and its blind-index tokens computed, in one update.
    found = yield Q(
        "SELECT workspace_id, conversation_id, seq, kind, body FROM events"
        " WHERE body IS NOT NULL AND body NOT LIKE 'lc1:%' AND body NOT LIKE 'lc2:%' LIMIT ?",
        (batch,),
    )
    for row in found.rows:
        key = yield from key_of(str(row["workspace_id"]))
        body = str(row["body"])
        terms = key.terms(body) if row["kind"] in SEARCHABLE_KINDS else None
        yield Q(
            "UPDATE events SET body=?, search_terms=? WHERE conversation_id=? AND seq=?",
            (key.seal(body, "events.body"), terms, row["conversation_id"], row["seq"]),
        )
        sealed += 1
    # Offline messages: the name and email in ``data`` (the body is sealed above).
    for kind, fields in SEALED_DATA_FIELDS.items():
        # ``data`` is compact JSON: a field still in plaintext reads ``"name":"`` not followed
        # by the sealed prefix.
        plain = " OR ".join(
            f'(data LIKE \'%"{f}":"%\' AND data NOT LIKE \'%"{f}":"lc1:%\''
            f' AND data NOT LIKE \'%"{f}":"lc2:%\')'
            for f in fields
        )
        found = yield Q(
            "SELECT workspace_id, conversation_id, seq, kind, data FROM events"
            f" WHERE kind=? AND ({plain}) LIMIT ?",
            (kind, batch),
        )
        sealed += yield from _seal_data_rows(found.rows, key_of)
    for table, cols in SEALED_COLUMNS.items():
        if table in SEALED_ELSEWHERE:
            continue
        unsealed = " OR ".join(
            f"({c} IS NOT NULL AND {c} NOT LIKE 'lc1:%' AND {c} NOT LIKE 'lc2:%')" for c in cols
        )
        id_column = ROW_ID_COLUMNS[table]
        found = yield Q(
            f"SELECT {id_column} AS id, workspace_id, {','.join(cols)} FROM {table}"
            # A row without a workspace (``mail_outbox`` allows them) has no data key to seal with.
            f" WHERE workspace_id IS NOT NULL AND ({unsealed}) LIMIT ?",
            (batch,),
        )
        for row in found.rows:
            key = yield from key_of(str(row["workspace_id"]))
            values: dict[str, Any] = {c: row[c] for c in cols}
            for c in cols:
                if isinstance(values[c], str) and not is_sealed(values[c]):
                    values[c] = key.seal(values[c], f"{table}.{c}")
            sets = ",".join(f"{c}=?" for c in cols)
            yield Q(f"UPDATE {table} SET {sets} WHERE {id_column}=?", (*values.values(), row["id"]))
            sealed += 1
    return sealed


def _seal_data_rows(
    rows: list[dict[str, Any]], key_of: Callable[[str], Program[DataKey]]
) -> Program[int]:
    """Seal the personal fields of these events' ``data``; returns how many rows changed."""
    changed = 0
    for row in rows:
        data = json.loads(str(row["data"]))
        fields = SEALED_DATA_FIELDS[str(row["kind"])]
        if not any(isinstance(data.get(f), str) and not is_sealed(data[f]) for f in fields):
            continue
        key = yield from key_of(str(row["workspace_id"]))
        yield Q(
            "UPDATE events SET data=? WHERE conversation_id=? AND seq=?",
            (dump_json(key.seal_data(str(row["kind"]), data)), row["conversation_id"], row["seq"]),
        )
        changed += 1
    return changed
