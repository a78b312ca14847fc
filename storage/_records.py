"""Turning database rows into records and records into rows, the same way for both backends.

JSON-ish fields (mappings and tuples) are stored as compact JSON text, never as JSONB, so what a
user wrote comes back byte for byte; enums are stored as their string values; booleans as the
backend's boolean. One table per record type, columns named like the record's fields.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import secrets
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs

from storage import api
from storage.errors import StorageError

R = TypeVar("R")

TABLES: Final[Mapping[type[Any], str]] = {
    api.Workspace: "workspaces",
    api.Agent: "agents",
    api.Group: "agent_groups",
    api.Visitor: "visitors",
    api.Conversation: "conversations",
    api.Event: "events",
    api.CannedResponse: "canned_responses",
    api.RoutingDecision: "routing_decisions",
    api.Ban: "bans",
    api.AuditEntry: "audit_log",
    api.ApiToken: "api_tokens",
    api.Session: "sessions",
    api.Attachment: "attachments",
    api.TwoFactor: "agent_two_factor",
    api.SsoConfig: "workspace_sso",
    api.SsoIdentity: "sso_identities",
    api.MailItem: "mail_outbox",
    api.AgentToken: "agent_tokens",
    api.InboxItem: "inbox_items",
    api.WebhookSubscription: "webhook_subscriptions",
    api.WebhookDelivery: "webhook_deliveries",
    api.WebhookAttempt: "webhook_attempts",
}


def new_id() -> str:
    """A random URL-safe id (96 bits) that never starts with "-", so that it can be given to a
    command-line flag (``--visitor ID``) without being taken for an option."""
    while True:
        candidate = secrets.token_urlsafe(12)
        if not candidate.startswith("-"):
            return candidate


def dump_json(value: Any) -> str:
    """Compact JSON text; non-ASCII kept as is so exports stay readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


Decoder = Callable[[Any], Any]


def _decoder_for(hint: Any) -> Decoder | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint)
    if base is typing.Union or base is types.UnionType:
        if len(args) == 1:
            inner = _decoder_for(args[0])
            if inner is None:
                return None
            return lambda v: None if v is None else inner(v)
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if hint is bool:
        return bool
    if hint is float:
        return float
    if base is tuple:
        return lambda v: tuple(json.loads(v))
    if base is Mapping or hint is Mapping:
        return json.loads
    return None


def _encoder_for(hint: Any) -> Decoder | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint)
    if base is typing.Union or base is types.UnionType:
        inner = _encoder_for(args[0]) if len(args) == 1 else None
        if inner is None:
            return None
        return lambda v: None if v is None else inner(v)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return lambda v: v.value if isinstance(v, enum.Enum) else str(v)
    if hint is float:
        return float
    if base is tuple:
        return lambda v: dump_json(list(v))
    if base is Mapping or hint is Mapping:
        return lambda v: dump_json(dict(v))
    return None


def _sql_type_for(hint: Any) -> str:
    """The PostgreSQL type of a field's column (for typed array arguments)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint)
    if (base is typing.Union or base is types.UnionType) and len(args) == 1:
        return _sql_type_for(args[0])
    if hint is bool:
        return "boolean"
    if hint is int:
        return "bigint"
    if hint is float:
        return "double precision"
    return "text"  # strings, enums (their values), JSON text


@attrs.frozen
class RecordCodec:
    """How one record type maps to its table's columns (in field order)."""

    cls: type[Any]
    table: str
    columns: tuple[str, ...]
    decoders: tuple[Decoder | None, ...]
    encoders: tuple[Decoder | None, ...]
    sql_types: tuple[str, ...]

    @property
    def typed_columns(self) -> tuple[tuple[str, str], ...]:
        """(column, PostgreSQL type) pairs, in field order."""
        return tuple(zip(self.columns, self.sql_types, strict=True))

    def from_row(self, row: Mapping[str, Any]) -> Any:
        values = {}
        for name, decode in zip(self.columns, self.decoders, strict=True):
            value = row[name]
            values[name] = value if decode is None or value is None else decode(value)
        return self.cls(**values)

    def encode(self, name: str, value: Any) -> Any:
        decode = self.encoders[self.columns.index(name)]
        return value if decode is None or value is None else decode(value)

    def to_args(self, record: Any) -> list[Any]:
        return [
            value if enc is None or value is None else enc(value)
            for enc, value in zip(
                self.encoders, (getattr(record, c) for c in self.columns), strict=True
            )
        ]

    def insert_sql(self) -> str:
        marks = ",".join("?" * len(self.columns))
        return f"INSERT INTO {self.table} ({','.join(self.columns)}) VALUES ({marks})"


def _codec(cls: type[Any]) -> RecordCodec:
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in attrs.fields(cls))
    return RecordCodec(
        cls=cls,
        table=TABLES[cls],
        columns=names,
        decoders=tuple(_decoder_for(hints[n]) for n in names),
        encoders=tuple(_encoder_for(hints[n]) for n in names),
        sql_types=tuple(_sql_type_for(hints[n]) for n in names),
    )


CODECS: Final[Mapping[type[Any], RecordCodec]] = {cls: _codec(cls) for cls in TABLES}


def codec(cls: type[R]) -> RecordCodec:
    return CODECS[cls]


def decode(cls: type[R], row: Mapping[str, Any]) -> R:
    record: R = CODECS[cls].from_row(row)
    return record


def columns(cls: type[Any], prefix: str = "") -> str:
    """The record's columns for a SELECT list, optionally table-qualified."""
    return ",".join(prefix + c for c in CODECS[cls].columns)


# ---------------------------------------------------------------- cursors


def encode_cursor(at: float, row_id: str) -> str:
    """An opaque keyset cursor: position after (time, id) in (time desc, id desc) order."""
    raw = dump_json([at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        return float(at), str(row_id)
    except (ValueError, TypeError, binascii.Error) as err:
        raise StorageError(f"invalid page cursor {cursor!r}") from err
