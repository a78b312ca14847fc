"""The tamper-evident audit log: one hash chain per workspace (and one for server-wide entries).

Each entry carries its position ``seq`` in its chain, the ``hash`` of the entry before it
(``prev_hash``; ``GENESIS`` for the first) and its own ``hash`` = SHA-256 of ``prev_hash`` and
the entry's canonical JSON (every column but the hashes, keys sorted). The chain's head (last seq
and hash) is kept in ``audit_heads``; appending locks that row for the transaction, so entries of
one workspace are written one after the other on both backends (SQLite has a single writer
anyway; PostgreSQL takes ``SELECT ... FOR UPDATE`` on the head).

``verify_chain_program`` walks a chain in seq order and names the first entry whose link does
not hold: an edited entry (its hash no longer matches its content), a deleted one (a gap in seq,
or the next entry's ``prev_hash`` points at nothing), or entries put in another order.

What this does NOT prove: someone able to write the database can recompute every hash after
their edit. The chain head that ``livechat audit verify`` prints is what an operator records
elsewhere (a ticket, another system's log) to make such a rewrite visible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from storage import api
from storage._records import CODECS, new_id
from storage._sql import Dialect, Program, Q

GENESIS: Final = "0" * 64
SERVER_CHAIN: Final = ""  # chain name of the server-wide entries (workspace_id NULL)
_VERIFY_CHUNK: Final = 1000
_HASHED_FIELDS: Final = (
    "seq",
    "workspace_id",
    "id",
    "actor",
    "action",
    "target",
    "details",
    "ip",
    "at",
)


def chain_of(workspace_id: str | None) -> str:
    return SERVER_CHAIN if workspace_id is None else workspace_id


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the canonical JSON of the entry's fields."""
    canonical = json.dumps(
        {name: fields[name] for name in _HASHED_FIELDS},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def _fields_of_row(row: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: row[name] for name in _HASHED_FIELDS}
    fields["details"] = json.loads(row["details"]) if row["details"] else {}
    fields["at"] = float(row["at"])
    fields["seq"] = None if row["seq"] is None else int(row["seq"])
    return fields


def _lock_head(dialect: Dialect, chain: str) -> Program[tuple[int, str]]:
    """Create the chain's head if missing and lock it for this transaction: (seq, hash)."""
    yield Q(
        "INSERT INTO audit_heads (chain, seq, hash) VALUES (?, 0, ?)"
        " ON CONFLICT (chain) DO NOTHING",
        (chain, GENESIS),
    )
    lock = dialect.lock_rows()
    head = yield Q(f"SELECT seq, hash FROM audit_heads WHERE chain=?{lock}", (chain,))
    row = head.one()
    assert row is not None  # inserted just above, in this transaction
    return int(row["seq"]), str(row["hash"])


def append_audit_program(
    dialect: Dialect,
    workspace_id: str | None,
    *,
    actor: str,
    action: str,
    at: float,
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
    ip: str | None = None,
) -> Program[api.AuditEntry]:
    """Append one entry to its chain, inside the caller's transaction."""
    chain = chain_of(workspace_id)
    seq, prev = yield from _lock_head(dialect, chain)
    entry = api.AuditEntry(
        id=new_id(),
        workspace_id=workspace_id,
        actor=actor,
        action=action,
        target=target,
        details=dict(details or {}),
        ip=ip,
        at=float(at),
        seq=seq + 1,
        prev_hash=prev,
    )
    # The hash is computed from the stored form (details round-tripped through JSON), so
    # verification from the row gives the same bytes.
    fields = {name: getattr(entry, name) for name in _HASHED_FIELDS}
    fields["details"] = json.loads(json.dumps(fields["details"]))
    entry = attrs.evolve(entry, hash=entry_hash(prev, fields))
    entry_codec = CODECS[api.AuditEntry]
    yield Q(entry_codec.insert_sql(), entry_codec.to_args(entry))
    yield Q("UPDATE audit_heads SET seq=?, hash=? WHERE chain=?", (entry.seq, entry.hash, chain))
    return entry


def repair_chains_program(dialect: Dialect) -> Program[int]:
    """Chain entries written before the chain existed (or restored from an older backup), and
    create missing heads from the log; returns how many entries were chained.

    Run after migrations and after a restore, in that transaction. Unchained entries are taken
    oldest first (time, then id) and appended after the chain's last entry.
    """
    chains = yield Q("SELECT DISTINCT COALESCE(workspace_id, '') AS chain FROM audit_log")
    chained = 0
    for chain_row in chains.rows:
        chain = str(chain_row["chain"])
        ws_cond = "workspace_id IS NULL" if chain == SERVER_CHAIN else "workspace_id=?"
        ws_args: tuple[Any, ...] = () if chain == SERVER_CHAIN else (chain,)
        head = yield Q("SELECT seq, hash FROM audit_heads WHERE chain=?", (chain,))
        if head.one() is None:
            last = yield Q(
                f"SELECT seq, hash FROM audit_log WHERE {ws_cond} AND seq IS NOT NULL"
                " ORDER BY seq DESC LIMIT 1",
                ws_args,
            )
            row = last.one()
            seq, prev = (int(row["seq"]), str(row["hash"])) if row else (0, GENESIS)
            yield Q(
                "INSERT INTO audit_heads (chain, seq, hash) VALUES (?, ?, ?)", (chain, seq, prev)
            )
        loose = yield Q(
            f"SELECT {','.join(CODECS[api.AuditEntry].columns)} FROM audit_log"
            f" WHERE {ws_cond} AND seq IS NULL ORDER BY at, {dialect.byte_order('id')}",
            ws_args,
        )
        if not loose.rows:
            continue
        seq, prev = yield from _lock_head(dialect, chain)
        for row in loose.rows:
            seq += 1
            fields = _fields_of_row({**row, "seq": seq})
            digest = entry_hash(prev, fields)
            yield Q(
                "UPDATE audit_log SET seq=?, prev_hash=?, hash=? WHERE id=?",
                (seq, prev, digest, row["id"]),
            )
            prev = digest
            chained += 1
        yield Q("UPDATE audit_heads SET seq=?, hash=? WHERE chain=?", (seq, prev, chain))
    return chained


def verify_chain_program(workspace_id: str | None) -> Program[api.AuditChainReport]:
    """Walk one chain in seq order; report the first broken link (see the module docstring)."""
    chain = chain_of(workspace_id)
    ws_cond = "workspace_id IS NULL" if workspace_id is None else "workspace_id=?"
    ws_args: tuple[Any, ...] = () if workspace_id is None else (workspace_id,)
    head_result = yield Q("SELECT seq, hash FROM audit_heads WHERE chain=?", (chain,))
    head = head_result.one()
    head_seq, head_hash = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS)
    loose_result = yield Q(
        f"SELECT id FROM audit_log WHERE {ws_cond} AND seq IS NULL LIMIT 1", ws_args
    )
    loose = loose_result.one()
    report = api.AuditChainReport(
        workspace_id=workspace_id, entries=0, head_seq=head_seq, head_hash=head_hash
    )
    cols = ",".join(CODECS[api.AuditEntry].columns)
    expected_seq, prev, count = 1, GENESIS, 0
    last_seq = 0
    while True:
        page = yield Q(
            f"SELECT {cols} FROM audit_log WHERE {ws_cond} AND seq>? ORDER BY seq, id LIMIT ?",
            (*ws_args, last_seq, _VERIFY_CHUNK),
        )
        for row in page.rows:
            seq = int(row["seq"])
            count += 1
            problem = None
            if seq != expected_seq:
                if seq < expected_seq:
                    problem = f"entry {seq} appears twice"
                else:
                    problem = f"entries {expected_seq}..{seq - 1} are missing (deleted)"
            elif row["prev_hash"] != prev:
                problem = "its link to the previous entry does not match (deleted or reordered)"
            elif row["hash"] != entry_hash(prev, _fields_of_row(row)):
                problem = "its content does not match its hash (edited)"
            if problem is not None:
                return attrs.evolve(
                    report,
                    entries=count,
                    broken_at=seq,
                    broken_id=str(row["id"]),
                    problem=problem,
                )
            prev = str(row["hash"])
            expected_seq = seq + 1
            last_seq = seq
        if len(page.rows) < _VERIFY_CHUNK:
            break
    if loose is not None:
        return attrs.evolve(
            report,
            entries=count,
            broken_id=str(loose["id"]),
            problem="an entry is outside the chain (its seq was cleared)",
        )
    if last_seq != head_seq or prev != head_hash:
        return attrs.evolve(
            report,
            entries=count,
            broken_at=last_seq + 1,
            problem=f"the chain ends at entry {last_seq} but its head says {head_seq}"
            " (the newest entries were deleted)",
        )
    return attrs.evolve(report, entries=count)


def chains_program() -> Program[list[str | None]]:
    """Every chain holding entries or a head: workspace ids, None for the server-wide one."""
    result = yield Q(
        "SELECT chain FROM audit_heads UNION SELECT COALESCE(workspace_id, '') FROM audit_log"
    )
    names = sorted({str(r["chain"]) for r in result.rows})
    return [None if n == SERVER_CHAIN else n for n in names]
