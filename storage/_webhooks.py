"""Webhook storage: subscriptions, the durable outbox of deliveries and their attempt log.

The outbox is filled from committed events, never on the append path: ``feed_webhooks`` reads
the events after a durable cursor (``webhook_cursor``, by the events' global position ``pos``),
inserts one delivery per matching subscription and advances the cursor in the same
transaction. A crash between an event's commit and the feed loses nothing: the cursor has not
moved, so the next feed reads the event again. A delivery's ``(subscription_id, event_id)`` is
unique, so a feed that runs twice over the same events adds nothing.

Positions can have holes: a rolled-back transaction consumes numbers (PostgreSQL), purged
events leave theirs, and on PostgreSQL with several server processes a later number can commit
before an earlier one. The feed takes the run of consecutive positions at once and steps over a
hole only for events older than ``settle_before``, so an event that commits late is not skipped.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from storage import api
from storage._audit import append_audit_program
from storage._records import RecordCodec, codec, columns, decode, new_id
from storage._sql import Dialect, Program, Q
from storage._vault import conversation_sealers_program, load_for_rows_program
from storage.crypto import DataKey
from storage.errors import NotFound

T = TypeVar("T")
R = TypeVar("R")

# (webhook event type, webhook event id, JSON payload) for one stored event
Expansion = Callable[[api.PositionedEvent], Sequence[tuple[str, str, str]]]

_SUB = codec(api.WebhookSubscription)
_DELIVERY = codec(api.WebhookDelivery)
_ATTEMPT = codec(api.WebhookAttempt)
CURSOR_NAME = "events"


def _pos_column(dialect: Dialect) -> str:
    return "pos"


def _events_after(dialect: Dialect, cursor: int, limit: int) -> Q:
    pos = _pos_column(dialect)
    cols = columns(api.Event, "e.")
    return Q(
        f"SELECT e.{pos} AS pos, {cols} FROM events e WHERE e.{pos} > ? ORDER BY e.{pos} LIMIT ?",
        (cursor, limit),
    )


def pending_program() -> Program[bool]:
    """True when an event exists past the feed's cursor."""
    result = yield Q(
        "SELECT 1 AS ok FROM events WHERE pos > (SELECT pos FROM webhook_cursor WHERE name=?)"
        " LIMIT 1",
        (CURSOR_NAME,),
    )
    return result.one() is not None


def _subscribed_workspaces_program() -> Program[list[str]]:
    result = yield Q(
        "SELECT DISTINCT workspace_id FROM webhook_subscriptions WHERE enabled=?", (True,)
    )
    return [str(row["workspace_id"]) for row in result.rows]


def feed_program(
    dialect: Dialect,
    *,
    limit: int,
    settle_before: float,
    now: float,
    expand: Expansion,
    keys: Mapping[str, DataKey | None] | None = None,
) -> Program[tuple[int, bool]]:
    """Move committed events past the cursor into the outbox: (deliveries added, whether
    more events may be waiting past this batch). ``keys``: the data keys of the workspaces
    with enabled subscriptions, to open sealed bodies (a payload carries the plaintext)."""
    result = yield Q("SELECT pos FROM webhook_cursor WHERE name=?", (CURSOR_NAME,))
    row = result.one()
    cursor = int(row["pos"]) if row else 0
    any_sub = yield Q("SELECT 1 AS ok FROM webhook_subscriptions WHERE enabled=? LIMIT 1", (True,))
    if any_sub.one() is None:
        # Nobody listens (the usual case, and after a restore): skip to the newest event in
        # one step. A subscription created later starts after its own ``from_pos`` anyway.
        yield Q(
            "UPDATE webhook_cursor SET pos=(SELECT COALESCE(MAX(pos), 0) FROM events)"
            " WHERE name=? AND pos < (SELECT COALESCE(MAX(pos), 0) FROM events)",
            (CURSOR_NAME,),
        )
        return 0, False
    subscribed = set((yield from _subscribed_workspaces_program()))
    result = yield _events_after(dialect, cursor, limit)
    for workspace_id, key in (keys or {}).items():  # the visitor keys of the bodies
        if key is not None:
            yield from load_for_rows_program(
                key, [r for r in result.rows if r["workspace_id"] == workspace_id]
            )
    taken: list[api.PositionedEvent] = []
    expected = cursor + 1
    keyless = False
    for r in result.rows:
        pos = int(r["pos"])
        workspace_id = str(r["workspace_id"])
        if keys is not None and workspace_id in subscribed and workspace_id not in keys:
            keyless = True  # subscribed since the caller fetched the keys: next feed
            break
        key = keys.get(workspace_id) if keys is not None else None
        event = decode(api.Event, key.open_row("events", r) if key is not None else r)
        if pos != expected and event.created_at > settle_before:
            break  # a hole that a late commit may still fill: wait for it
        taken.append(api.PositionedEvent(pos=pos, event=event))
        expected = pos + 1
    more = keyless or (len(result.rows) == limit and len(taken) == len(result.rows))
    if not taken:
        return 0, keyless
    workspaces = sorted({p.event.workspace_id for p in taken})
    where, args = dialect.in_list("workspace_id", workspaces)
    subs_result = yield Q(
        f"SELECT {columns(api.WebhookSubscription)} FROM webhook_subscriptions"
        f" WHERE {where} AND enabled=?",
        [*args, True],
    )
    subs: dict[str, list[api.WebhookSubscription]] = {}
    for s in subs_result.rows:
        sub = decode(api.WebhookSubscription, s)
        subs.setdefault(sub.workspace_id, []).append(sub)
    # A payload about a conversation is sealed with its visitor's key (storage._vault).
    sealers = yield from conversation_sealers_program(
        keys or {},
        [
            (p.event.workspace_id, p.event.conversation_id)
            for p in taken
            if p.event.workspace_id in subs
        ],
        now=now,
        create=True,
    )
    added = 0
    for positioned in taken:
        candidates = subs.get(positioned.event.workspace_id)
        if not candidates:
            continue
        expanded = expand(positioned)
        key = sealers.get(positioned.event.conversation_id)
        if key is None and keys is not None:
            key = keys.get(positioned.event.workspace_id)
        for sub in candidates:
            if positioned.pos <= sub.from_pos:
                continue
            for event_type, event_id, payload in expanded:
                if event_type not in sub.event_types:
                    continue
                delivery = api.WebhookDelivery(
                    id=new_id(),
                    workspace_id=sub.workspace_id,
                    subscription_id=sub.id,
                    event_id=event_id,
                    event_type=event_type,
                    payload=payload,
                    conversation_id=positioned.event.conversation_id,
                    next_attempt_at=now,
                    created_at=now,
                )
                inserted = yield Q(
                    _DELIVERY.insert_sql() + " ON CONFLICT (subscription_id, event_id) DO NOTHING",
                    _sealed_args(_DELIVERY, delivery, key),
                )
                added += inserted.rowcount
    yield Q("UPDATE webhook_cursor SET pos=? WHERE name=?", (taken[-1].pos, CURSOR_NAME))
    return added, more


class WebhookStore(abc.ABC):
    """The webhook part of ``SqlStorage`` (mixed in; see the module docstring)."""

    _clock: Callable[[], float]

    @property
    @abc.abstractmethod
    def dialect(self) -> Dialect: ...

    @abc.abstractmethod
    async def _write(self, program: Program[T]) -> T: ...

    @abc.abstractmethod
    async def _read(self, program: Program[T]) -> T: ...

    @abc.abstractmethod
    async def data_key(self, workspace_id: str) -> DataKey | None: ...

    @abc.abstractmethod
    async def _ready_key(
        self, workspace_id: str, rows: Iterable[Mapping[str, Any]]
    ) -> DataKey | None: ...

    async def _opened_rows(
        self, cls: type[R], table: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[R]:
        """Decode rows, their sealed columns opened with their workspace's (cached) key."""
        out = []
        for row in rows:
            key = await self._ready_key(str(row["workspace_id"]), [row])
            out.append(decode(cls, key.open_row(table, row) if key is not None else row))
        return out

    async def create_webhook(
        self,
        workspace_id: str,
        *,
        url: str,
        event_types: Sequence[str],
        secret: str,
        description: str | None = None,
    ) -> api.WebhookSubscription:
        """A new enabled subscription; it receives events committed after its creation."""
        now = self._clock()
        pos = _pos_column(self.dialect)
        key = await self.data_key(workspace_id)

        def program() -> Program[api.WebhookSubscription]:
            found = yield Q("SELECT 1 AS ok FROM workspaces WHERE id=?", (workspace_id,))
            if found.one() is None:
                raise NotFound(f"workspace {workspace_id!r} not found")
            top = yield Q(f"SELECT COALESCE(MAX({pos}), 0) AS p FROM events")
            row = top.one()
            sub = api.WebhookSubscription(
                id=new_id(),
                workspace_id=workspace_id,
                url=url,
                event_types=tuple(event_types),
                description=description,
                secret=secret,
                from_pos=int(row["p"]) if row else 0,
                created_at=now,
            )
            yield Q(_SUB.insert_sql(), _sealed_args(_SUB, sub, key))
            return sub

        return await self._write(program())

    async def get_webhook(
        self, workspace_id: str, subscription_id: str
    ) -> api.WebhookSubscription | None:
        sql = (
            f"SELECT {columns(api.WebhookSubscription)} FROM webhook_subscriptions"
            " WHERE workspace_id=? AND id=?"
        )
        rows = await self._read(_fetch(Q(sql, (workspace_id, subscription_id))))
        found = await self._opened_rows(api.WebhookSubscription, "webhook_subscriptions", rows)
        return found[0] if found else None

    async def list_webhooks(self, workspace_id: str) -> list[api.WebhookSubscription]:
        sql = (
            f"SELECT {columns(api.WebhookSubscription)} FROM webhook_subscriptions"
            " WHERE workspace_id=? ORDER BY created_at, id"
        )
        rows = await self._read(_fetch(Q(sql, (workspace_id,))))
        return await self._opened_rows(api.WebhookSubscription, "webhook_subscriptions", rows)

    async def update_webhook(
        self, workspace_id: str, subscription_id: str, **changes: Any
    ) -> api.WebhookSubscription:
        fixed = {"id", "workspace_id", "created_at", "from_pos"}
        unknown = sorted(set(changes) - (set(_SUB.columns) - fixed))
        if unknown:
            raise TypeError(f"cannot change webhook field(s): {', '.join(unknown)}")
        sets = ",".join(f"{name}=?" for name in changes) or "id=id"
        encoded = {name: _SUB.encode(name, value) for name, value in changes.items()}
        key = await self.data_key(workspace_id)
        if key is not None:
            encoded = key.seal_row("webhook_subscriptions", encoded)
        args = list(encoded.values())
        sql = (
            f"UPDATE webhook_subscriptions SET {sets} WHERE workspace_id=? AND id=?"
            f" RETURNING {columns(api.WebhookSubscription)}"
        )
        rows = await self._write(_fetch(Q(sql, [*args, workspace_id, subscription_id])))
        if not rows:
            raise NotFound(f"webhook {subscription_id!r} not found")
        [sub] = await self._opened_rows(api.WebhookSubscription, "webhook_subscriptions", rows)
        return sub

    async def delete_webhook(self, workspace_id: str, subscription_id: str) -> None:
        """Delete a subscription with its deliveries and their attempts."""

        def program() -> Program[None]:
            found = yield Q(
                "SELECT 1 AS ok FROM webhook_subscriptions WHERE workspace_id=? AND id=?",
                (workspace_id, subscription_id),
            )
            if found.one() is None:
                raise NotFound(f"webhook {subscription_id!r} not found")
            yield Q(
                "DELETE FROM webhook_attempts WHERE workspace_id=? AND delivery_id IN"
                " (SELECT id FROM webhook_deliveries WHERE subscription_id=?)",
                (workspace_id, subscription_id),
            )
            yield Q(
                "DELETE FROM webhook_deliveries WHERE workspace_id=? AND subscription_id=?",
                (workspace_id, subscription_id),
            )
            yield Q(
                "DELETE FROM webhook_subscriptions WHERE workspace_id=? AND id=?",
                (workspace_id, subscription_id),
            )

        await self._write(program())

    async def feed_webhooks(
        self, *, limit: int, settle_s: float, expand: Expansion
    ) -> tuple[int, bool]:
        """One step of the dispatcher: committed events after the cursor into the outbox.

        A read first: with no event past the cursor (the usual case) no write transaction is
        opened, so an idle server does not take the writer every poll."""
        if not await self._read(pending_program()):
            return 0, False
        # Bodies are sealed at rest: the keys of the subscribed workspaces open them (a
        # workspace subscribed after this read waits for the next feed).
        subscribed = await self._read(_subscribed_workspaces_program())
        keys = {ws: await self.data_key(ws) for ws in subscribed}
        now = self._clock()
        return await self._write(
            feed_program(
                self.dialect,
                limit=limit,
                settle_before=now - settle_s,
                now=now,
                expand=expand,
                keys=keys,
            )
        )

    async def enqueue_webhook_events(self, items: Sequence[tuple[str, str, str, str]]) -> int:
        """Outbox rows for events that are not conversation events (visitor identified,
        agent status): (workspace_id, event type, event id, payload) each, for every enabled
        subscription of that workspace asking for the type. Returns deliveries added."""
        now = self._clock()
        workspaces = sorted({item[0] for item in items})
        keys = {ws: await self.data_key(ws) for ws in workspaces}

        def program() -> Program[int]:
            if not workspaces:
                return 0
            where, args = self.dialect.in_list("workspace_id", workspaces)
            result = yield Q(
                f"SELECT {columns(api.WebhookSubscription)} FROM webhook_subscriptions"
                f" WHERE {where} AND enabled=?",
                [*args, True],
            )
            subs = [decode(api.WebhookSubscription, r) for r in result.rows]
            added = 0
            for workspace_id, event_type, event_id, payload in items:
                for sub in subs:
                    if sub.workspace_id != workspace_id or event_type not in sub.event_types:
                        continue
                    delivery = api.WebhookDelivery(
                        id=new_id(),
                        workspace_id=workspace_id,
                        subscription_id=sub.id,
                        event_id=event_id,
                        event_type=event_type,
                        payload=payload,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    inserted = yield Q(
                        _DELIVERY.insert_sql()
                        + " ON CONFLICT (subscription_id, event_id) DO NOTHING",
                        _sealed_args(_DELIVERY, delivery, keys[workspace_id]),
                    )
                    added += inserted.rowcount
            return added

        return await self._write(program())

    async def due_webhook_deliveries(
        self, *, now: float, limit: int
    ) -> list[tuple[api.WebhookDelivery, api.WebhookSubscription]]:
        """Pending deliveries whose time has come, of enabled subscriptions, oldest first."""
        dcols = ", ".join(f"d.{c} AS d_{c}" for c in _DELIVERY.columns)
        scols = ", ".join(f"s.{c} AS s_{c}" for c in _SUB.columns)
        sql = (
            f"SELECT {dcols}, {scols} FROM webhook_deliveries d"
            " JOIN webhook_subscriptions s ON s.id = d.subscription_id"
            " WHERE d.state=? AND d.next_attempt_at<=? AND s.enabled=?"
            " ORDER BY d.next_attempt_at, d.created_at, d.id LIMIT ?"
        )
        rows = await self._read(_fetch(Q(sql, (api.DeliveryState.PENDING.value, now, True, limit))))
        deliveries = [_prefixed(r, "d_") for r in rows]
        subs = [_prefixed(r, "s_") for r in rows]
        return list(
            zip(
                await self._opened_rows(api.WebhookDelivery, "webhook_deliveries", deliveries),
                await self._opened_rows(api.WebhookSubscription, "webhook_subscriptions", subs),
                strict=True,
            )
        )

    async def claim_webhook_deliveries(
        self, delivery_ids: Sequence[str], *, now: float, lease_until: float
    ) -> dict[str, int]:
        """Take due deliveries for an attempt: each still pending and due gets
        ``next_attempt_at = lease_until`` (so no other loop or server takes it meanwhile;
        if this process dies, it is due again when the lease ends). Returns the ids taken,
        each with its attempts so far (fresh, not the caller's possibly stale read)."""
        if not delivery_ids:
            return {}
        where, args = self.dialect.in_list("id", list(delivery_ids))
        sql = (
            f"UPDATE webhook_deliveries SET next_attempt_at=? WHERE {where}"
            " AND state=? AND next_attempt_at<=? RETURNING id, attempts"
        )
        rows = await self._write(
            _fetch(Q(sql, [lease_until, *args, api.DeliveryState.PENDING.value, now]))
        )
        return {str(r["id"]): int(r["attempts"]) for r in rows}

    async def record_webhook_attempt(
        self,
        attempt: api.WebhookAttempt,
        *,
        state: api.DeliveryState,
        next_attempt_at: float | None,
        disable_after_failures: int,
    ) -> api.WebhookSubscription | None:
        """Log one attempt and move its delivery on; count the subscription's failures in a
        row (reset by a success). Returns the subscription if this attempt disabled it (then
        audited as ``webhook.disabled`` in the same transaction)."""
        ok = attempt.status_code is not None and 200 <= attempt.status_code < 300
        key = await self.data_key(attempt.workspace_id)

        def program() -> Program[api.WebhookSubscription | None]:
            found = yield Q(
                "SELECT subscription_id FROM webhook_deliveries WHERE workspace_id=? AND id=?",
                (attempt.workspace_id, attempt.delivery_id),
            )
            row = found.one()
            if row is None:
                return None  # deleted with its subscription meanwhile
            sub_id = str(row["subscription_id"])
            yield Q(_ATTEMPT.insert_sql(), _ATTEMPT.to_args(attempt))
            yield Q(
                "UPDATE webhook_deliveries SET state=?, attempts=?, next_attempt_at=?,"
                " last_status=?, last_error=?, delivered_at=? WHERE id=?",
                (
                    state.value,
                    attempt.attempt,
                    next_attempt_at,
                    attempt.status_code,
                    attempt.error,
                    attempt.at if ok else None,
                    attempt.delivery_id,
                ),
            )
            if ok:
                yield Q(
                    "UPDATE webhook_subscriptions SET consecutive_failures=0 WHERE id=?",
                    (sub_id,),
                )
                return None
            updated = yield Q(
                "UPDATE webhook_subscriptions SET consecutive_failures=consecutive_failures+1"
                f" WHERE id=? RETURNING {columns(api.WebhookSubscription)}",
                (sub_id,),
            )
            sub_row = updated.one()
            if sub_row is None:
                return None
            if key is not None:
                sub_row = key.open_row("webhook_subscriptions", sub_row)
            sub = decode(api.WebhookSubscription, sub_row)
            if not sub.enabled or sub.consecutive_failures < disable_after_failures:
                return None
            reason = f"{sub.consecutive_failures} failed attempts in a row"
            yield Q(
                "UPDATE webhook_subscriptions SET enabled=?, disabled_reason=? WHERE id=?",
                (False, reason, sub_id),
            )
            # The owner's notice, in the same commit: a disabled subscription always has it.
            yield from append_audit_program(
                self.dialect,
                sub.workspace_id,
                actor="system",
                action="webhook.disabled",
                at=attempt.at,
                target=f"webhook:{sub.id}",
                details={"reason": reason, "url": sub.url},
            )
            return _evolve(sub, enabled=False, disabled_reason=reason)

        return await self._write(program())

    async def list_webhook_deliveries(
        self, workspace_id: str, subscription_id: str, *, limit: int = 50
    ) -> list[api.WebhookDelivery]:
        """Newest first."""
        sql = (
            f"SELECT {columns(api.WebhookDelivery)} FROM webhook_deliveries"
            " WHERE workspace_id=? AND subscription_id=? ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = await self._read(
            _fetch(Q(sql, (workspace_id, subscription_id, min(limit, api.MAX_PAGE))))
        )
        return await self._opened_rows(api.WebhookDelivery, "webhook_deliveries", rows)

    async def get_webhook_delivery(
        self, workspace_id: str, delivery_id: str
    ) -> api.WebhookDelivery | None:
        sql = (
            f"SELECT {columns(api.WebhookDelivery)} FROM webhook_deliveries"
            " WHERE workspace_id=? AND id=?"
        )
        rows = await self._read(_fetch(Q(sql, (workspace_id, delivery_id))))
        found = await self._opened_rows(api.WebhookDelivery, "webhook_deliveries", rows)
        return found[0] if found else None

    async def list_webhook_attempts(
        self, workspace_id: str, delivery_id: str
    ) -> list[api.WebhookAttempt]:
        sql = (
            f"SELECT {columns(api.WebhookAttempt)} FROM webhook_attempts"
            " WHERE workspace_id=? AND delivery_id=? ORDER BY attempt, at LIMIT ?"
        )
        rows = await self._read(_fetch(Q(sql, (workspace_id, delivery_id, api.MAX_PAGE))))
        return [decode(api.WebhookAttempt, r) for r in rows]

    async def redeliver_webhook(self, workspace_id: str, delivery_id: str) -> api.WebhookDelivery:
        """Queue a delivery again now, whatever its state (attempts keep counting)."""
        sql = (
            "UPDATE webhook_deliveries SET state=?, next_attempt_at=? WHERE workspace_id=? AND id=?"
            f" RETURNING {columns(api.WebhookDelivery)}"
        )
        args = (api.DeliveryState.PENDING.value, self._clock(), workspace_id, delivery_id)
        rows = await self._write(_fetch(Q(sql, args)))
        if not rows:
            raise NotFound(f"delivery {delivery_id!r} not found")
        [delivery] = await self._opened_rows(api.WebhookDelivery, "webhook_deliveries", rows)
        return delivery


def _sealed_args(record_codec: RecordCodec, record: Any, key: DataKey | None) -> list[Any]:
    """Insert arguments of ``record``, its table's sealed columns encrypted with ``key``."""
    args = record_codec.to_args(record)
    if key is None:
        return list(args)
    row = dict(zip(record_codec.columns, args, strict=True))
    return list(key.seal_row(record_codec.table, row).values())


def _fetch(q: Q) -> Program[list[dict[str, Any]]]:
    result = yield q
    return result.rows


def _prefixed(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}


def _evolve(sub: api.WebhookSubscription, **changes: Any) -> api.WebhookSubscription:
    import attrs

    return attrs.evolve(sub, **changes)
