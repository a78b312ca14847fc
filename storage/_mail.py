"""Storage of outgoing mail, single-use agent links and the offline-message inbox.

A mixin of ``SqlStorage`` (same programs on both backends). The outbox is claimed row by row
with an optimistic ``UPDATE ... WHERE next_attempt_at = ?``, so two servers sharing a database
never both send one mail; a claim is a lease (``next_attempt_at`` moves forward), so a mail whose
sender died mid-attempt is retried after the lease instead of being lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from storage import api
from storage._records import codec, columns, decode
from storage._sql import Program, Q, Result
from storage.crypto import DataKey

T = TypeVar("T")

_MAIL = codec(api.MailItem)
# Literal, as in the partial index ``conversations_inbox`` (migration 0004), so that it is used.
INBOX_REASONS_SQL = "'offline', 'missed'"


def _fetch_rows(q: Q) -> Program[list[dict[str, Any]]]:
    result = yield q
    return result.rows


class MailStorage:
    """Outbox, agent tokens and inbox; relies on ``SqlStorage``'s driver methods."""

    async def _write(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def _read(self, program: Program[T]) -> T:  # pragma: no cover - SqlStorage's
        raise NotImplementedError

    async def data_key(self, workspace_id: str) -> DataKey | None:  # pragma: no cover
        raise NotImplementedError

    async def _sealer_for_conversation(  # pragma: no cover - storage._vault's
        self, workspace_id: str, conversation_id: str
    ) -> DataKey | None:
        raise NotImplementedError

    async def _read_conversations(  # pragma: no cover - storage._vault's
        self, sql: str, *args: Any
    ) -> list[api.Conversation]:
        raise NotImplementedError

    async def _ready_key(  # pragma: no cover - storage._vault's
        self, workspace_id: str, rows: Iterable[Mapping[str, Any]]
    ) -> DataKey | None:
        raise NotImplementedError

    async def _mail_args(self, item: api.MailItem) -> list[Any]:
        """Insert arguments of a mail: recipient, subject and text sealed with the workspace's
        data key, or the visitor's key when it is about a conversation (server-wide mail, with
        no workspace, has none and is stored as it is)."""
        args = _MAIL.to_args(item)
        ws, conversation = item.workspace_id, item.conversation_id
        if ws is None:
            key = None
        elif conversation is not None:
            key = await self._sealer_for_conversation(ws, conversation)
        else:
            key = await self.data_key(ws)
        if key is None:
            return list(args)
        return list(
            key.seal_row("mail_outbox", dict(zip(_MAIL.columns, args, strict=True))).values()
        )

    async def _opened_mail(self, rows: Sequence[dict[str, Any]]) -> list[api.MailItem]:
        out = []
        for row in rows:
            ws = row["workspace_id"]
            key = None if ws is None else await self._ready_key(str(ws), [row])
            out.append(decode(api.MailItem, key.open_row("mail_outbox", row) if key else row))
        return out

    # ------------------------------------------------------------ outbox

    async def enqueue_mail(self, item: api.MailItem) -> bool:
        """Queue a mail; False when one with the same ``dedupe_key`` exists (idempotent)."""
        sql = _MAIL.insert_sql() + " ON CONFLICT DO NOTHING"
        args = await self._mail_args(item)

        def program() -> Program[bool]:
            result: Result = yield Q(sql, args)
            return result.rowcount == 1

        return await self._write(program())

    async def due_mail(self, now: float, *, limit: int = 20) -> list[api.MailItem]:
        sql = (
            f"SELECT {columns(api.MailItem)} FROM mail_outbox WHERE status=?"
            " AND next_attempt_at<=? ORDER BY next_attempt_at, id LIMIT ?"
        )
        rows = await self._read(_fetch_rows(Q(sql, (api.MailStatus.QUEUED.value, now, limit))))
        return await self._opened_mail(rows)

    async def next_mail_due_at(self) -> float | None:
        """When the earliest queued mail is due (None: nothing queued)."""
        sql = "SELECT MIN(next_attempt_at) AS due FROM mail_outbox WHERE status=?"
        rows = await self._read(_fetch_rows(Q(sql, (api.MailStatus.QUEUED.value,))))
        due = rows[0]["due"] if rows else None
        return None if due is None else float(due)

    async def claim_mail(self, item: api.MailItem, *, lease_until: float) -> bool:
        """Take one attempt at ``item``: True when this caller won it (attempts + 1)."""
        sql = (
            "UPDATE mail_outbox SET attempts=attempts+1, next_attempt_at=?"
            " WHERE id=? AND status=? AND next_attempt_at=?"
        )
        args = (lease_until, item.id, api.MailStatus.QUEUED.value, item.next_attempt_at)

        def program() -> Program[bool]:
            result: Result = yield Q(sql, args)
            return result.rowcount == 1

        return await self._write(program())

    async def mail_sent(self, mail_id: str, *, at: float) -> None:
        sql = "UPDATE mail_outbox SET status=?, sent_at=?, last_error=NULL WHERE id=?"
        await self._write(_fetch_rows(Q(sql, (api.MailStatus.SENT.value, at, mail_id))))

    async def mail_attempt_failed(
        self, mail_id: str, *, error: str, retry_at: float | None
    ) -> None:
        """Record a failed attempt: retry at ``retry_at``, or give up (``None``)."""
        if retry_at is None:
            sql = "UPDATE mail_outbox SET status=?, last_error=? WHERE id=?"
            args: Sequence[Any] = (api.MailStatus.FAILED.value, error, mail_id)
        else:
            sql = "UPDATE mail_outbox SET next_attempt_at=?, last_error=? WHERE id=?"
            args = (retry_at, error, mail_id)
        await self._write(_fetch_rows(Q(sql, args)))

    async def list_mail(
        self, workspace_id: str, *, status: api.MailStatus | None = None, limit: int = 100
    ) -> list[api.MailItem]:
        """The workspace's delivery log, newest first."""
        where = "workspace_id=?" + (" AND status=?" if status is not None else "")
        args: list[Any] = [workspace_id] + ([status.value] if status is not None else [])
        sql = (
            f"SELECT {columns(api.MailItem)} FROM mail_outbox WHERE {where}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = await self._read(_fetch_rows(Q(sql, [*args, limit])))
        return await self._opened_mail(rows)

    async def prune_mail(self, *, before: float) -> int:
        """Forget sent and failed mail created before ``before``; returns how many rows."""
        sql = "DELETE FROM mail_outbox WHERE status IN (?, ?) AND created_at<?"
        args = (api.MailStatus.SENT.value, api.MailStatus.FAILED.value, before)

        def program() -> Program[int]:
            result: Result = yield Q(sql, args)
            return result.rowcount

        return await self._write(program())

    # ------------------------------------------------------------ agent tokens

    async def create_agent_token(self, token: api.AgentToken) -> None:
        token_codec = codec(api.AgentToken)
        await self._write(_fetch_rows(Q(token_codec.insert_sql(), token_codec.to_args(token))))

    async def use_agent_token(
        self, token_hash: str, *, purposes: Sequence[str], now: float
    ) -> api.AgentToken | None:
        """Spend a token once: the token, or None when unknown, used, expired or of another
        purpose. Using one also spends the agent's other tokens of the same purposes."""
        marks = ",".join("?" * len(purposes))
        sql = (
            f"UPDATE agent_tokens SET used_at=? WHERE token_hash=? AND used_at IS NULL"
            f" AND expires_at>? AND purpose IN ({marks}) RETURNING {columns(api.AgentToken)}"
        )

        def program() -> Program[api.AgentToken | None]:
            result: Result = yield Q(sql, (now, token_hash, now, *purposes))
            row = result.one()
            if row is None:
                return None
            token = decode(api.AgentToken, row)
            yield Q(
                f"UPDATE agent_tokens SET used_at=? WHERE workspace_id=? AND agent_id=?"
                f" AND used_at IS NULL AND purpose IN ({marks})",
                (now, token.workspace_id, token.agent_id, *purposes),
            )
            return token

        return await self._write(program())

    async def find_agents_by_email(self, email: str) -> list[api.Agent]:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE lower(email)=lower(?) LIMIT 10"
        rows = await self._read(_fetch_rows(Q(sql, (email,))))
        return [decode(api.Agent, r) for r in rows]

    # ------------------------------------------------------------ inbox

    async def unscanned_inbox_conversations(
        self, *, since: float, limit: int = 100
    ) -> list[api.Conversation]:
        """Closed conversations (offline message, unanswered chat) closed at or after
        ``since`` that have no inbox item yet, oldest first."""
        sql = (
            f"SELECT {columns(api.Conversation, 'c.')} FROM conversations c"
            f" WHERE c.close_reason IN ({INBOX_REASONS_SQL}) AND c.state=? AND c.closed_at>=?"
            " AND NOT EXISTS (SELECT 1 FROM inbox_items i WHERE i.conversation_id=c.id)"
            " ORDER BY c.closed_at, c.id LIMIT ?"
        )
        args = (api.ConversationState.CLOSED.value, since, limit)
        return await self._read_conversations(sql, *args)

    async def add_inbox_item(self, item: api.InboxItem, *, mail: api.MailItem | None) -> bool:
        """Add an inbox item and, in the same commit, its notification mail; False (and no
        mail) when the item exists already."""
        inbox_codec = codec(api.InboxItem)
        mail_args = None if mail is None else await self._mail_args(mail)

        def program() -> Program[bool]:
            result: Result = yield Q(
                inbox_codec.insert_sql() + " ON CONFLICT DO NOTHING", inbox_codec.to_args(item)
            )
            if result.rowcount != 1:
                return False
            if mail_args is not None:
                yield Q(_MAIL.insert_sql() + " ON CONFLICT DO NOTHING", mail_args)
            return True

        return await self._write(program())

    async def list_inbox(
        self, workspace_id: str, *, status: api.InboxStatus | None = None, limit: int = 100
    ) -> list[api.InboxItem]:
        where = "workspace_id=?" + (" AND status=?" if status is not None else "")
        args: list[Any] = [workspace_id] + ([status.value] if status is not None else [])
        sql = (
            f"SELECT {columns(api.InboxItem)} FROM inbox_items WHERE {where}"
            " ORDER BY created_at DESC, conversation_id DESC LIMIT ?"
        )
        rows = await self._read(_fetch_rows(Q(sql, [*args, limit])))
        return [decode(api.InboxItem, r) for r in rows]

    async def count_inbox(self, workspace_id: str, *, status: api.InboxStatus) -> int:
        sql = "SELECT COUNT(*) AS n FROM inbox_items WHERE workspace_id=? AND status=?"
        rows = await self._read(_fetch_rows(Q(sql, (workspace_id, status.value))))
        return int(rows[0]["n"]) if rows else 0

    async def get_inbox_item(self, workspace_id: str, conversation_id: str) -> api.InboxItem | None:
        sql = (
            f"SELECT {columns(api.InboxItem)} FROM inbox_items"
            " WHERE workspace_id=? AND conversation_id=?"
        )
        rows = await self._read(_fetch_rows(Q(sql, (workspace_id, conversation_id))))
        return decode(api.InboxItem, rows[0]) if rows else None

    async def update_inbox_item(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        now: float,
        changes: dict[str, Any],
        reply: api.MailItem | None = None,
    ) -> api.InboxItem | None:
        """Change an item (status, assignee); with ``reply``, queue that mail and count it, in
        the same commit. None when the item does not exist in this workspace."""
        inbox_codec = codec(api.InboxItem)
        reply_args = None if reply is None else await self._mail_args(reply)
        sets = [f"{name}=?" for name in changes] + ["updated_at=?"]
        args = [inbox_codec.encode(name, value) for name, value in changes.items()] + [now]
        if reply is not None:
            sets.append("replies=replies+1")
        sql = (
            f"UPDATE inbox_items SET {','.join(sets)} WHERE workspace_id=? AND conversation_id=?"
            f" RETURNING {columns(api.InboxItem)}"
        )

        def program() -> Program[api.InboxItem | None]:
            result: Result = yield Q(sql, [*args, workspace_id, conversation_id])
            row = result.one()
            if row is None:
                return None
            if reply_args is not None:
                yield Q(_MAIL.insert_sql(), reply_args)
            return decode(api.InboxItem, row)

        return await self._write(program())
